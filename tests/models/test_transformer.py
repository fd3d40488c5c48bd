"""Tests for the decoder itself: packing, masks, remat, mixed precision, the hidden path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpref.logprobs import sequence_logps, sequence_logps_from_hidden
from jaxpref.models import Transformer, TransformerConfig, default_positions
from jaxpref.models.attention import attention_mask


def tiny_model(**overrides) -> Transformer:
    return Transformer(TransformerConfig.tiny(**overrides), rngs=nnx.Rngs(0))


@nnx.jit
def run(model, ids, attention_mask=None, segment_ids=None):
    """The model's logits, compiled (faster than op-by-op on CPU)."""
    return model(ids, attention_mask=attention_mask, segment_ids=segment_ids)


def np_mask(q_index, kv_index, valid, segments=None, window=None):
    """Loop-by-loop reference of the attention mask rules."""
    b, t, s = valid.shape[0], len(q_index), len(kv_index)
    out = np.zeros((b, t, s), bool)
    for i in range(b):
        for a in range(t):
            for c in range(s):
                ok = kv_index[c] <= q_index[a] and valid[i, c]
                if segments is not None:
                    ok = ok and segments[i, a] == segments[i, c]
                if window is not None:
                    ok = ok and q_index[a] - kv_index[c] < window
                out[i, a, c] = ok
    return out


@pytest.mark.parametrize("window", [None, 2])
def test_attention_mask_matches_loops(window):
    rng = np.random.default_rng(0)
    valid = rng.random((2, 6)) < 0.7
    segments = np.array([[1, 1, 2, 2, 2, 3], [1, 1, 1, 1, 2, 2]])
    index = np.arange(6)
    got = attention_mask(
        jnp.asarray(index),
        jnp.asarray(index),
        jnp.asarray(valid),
        q_segment=jnp.asarray(segments),
        kv_segment=jnp.asarray(segments),
        window=window,
    )
    np.testing.assert_array_equal(got, np_mask(index, index, valid, segments, window))


def test_default_positions_restart_per_segment_and_skip_padding():
    mask = jnp.array([[0, 1, 1, 1, 1, 1, 0]], bool)
    segments = jnp.array([[0, 1, 1, 2, 2, 2, 2]])
    assert default_positions(mask, segments).tolist() == [[0, 0, 1, 0, 1, 2, 2]]


@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_packed_sequences_equal_separate_runs(architecture):
    window = 3 if architecture == "mistral" else None
    model = tiny_model(architecture=architecture, sliding_window=window)
    rng = np.random.default_rng(0)
    lengths = [5, 3, 4]
    sequences = [rng.integers(1, 128, n) for n in lengths]
    packed = np.concatenate([*sequences, np.zeros(2, int)])[None]  # 2 padding tokens
    segments = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [[0, 0]])
    mask = np.arange(packed.shape[1]) < sum(lengths)
    logits = run(model, packed, mask[None], segments[None])
    start = 0
    for seq in sequences:
        alone = run(model, seq[None])
        np.testing.assert_allclose(logits[0, start : start + len(seq)], alone[0], atol=1e-5)
        start += len(seq)


def test_padding_does_not_change_real_tokens():
    model = tiny_model()
    ids = np.array([[3, 4, 5, 6]])
    left = np.array([[0, 0, 3, 4, 5, 6]])
    right = np.array([[3, 4, 5, 6, 0, 0]])
    mask_left, mask_right = left != 0, right != 0
    alone = run(model, ids)[0]
    np.testing.assert_allclose(run(model, left, mask_left)[0, 2:], alone, atol=1e-5)
    np.testing.assert_allclose(run(model, right, mask_right)[0, :4], alone, atol=1e-5)
    assert np.isfinite(np.asarray(run(model, left, mask_left))).all()


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["full", "dots", "dots_with_no_batch_dims"])
def test_remat_gives_the_same_values_and_gradients(policy):
    ids = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])

    def loss(model):
        return jnp.mean(jax.nn.log_softmax(model(ids))[..., 0])

    plain, remat = tiny_model(), tiny_model(remat=policy)
    value, grads = nnx.jit(nnx.value_and_grad(loss))(plain)
    remat_value, remat_grads = nnx.jit(nnx.value_and_grad(loss))(remat)
    np.testing.assert_allclose(remat_value, value, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(remat_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
def test_bfloat16_compute_with_float32_parameters():
    ids = jnp.array([[1, 2, 3, 4, 5, 6]])
    full = tiny_model()
    mixed = tiny_model(dtype=jnp.bfloat16)
    params = jax.tree.leaves(nnx.state(mixed, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)
    hidden = nnx.jit(lambda m, x: m.hidden_states(x))(mixed, ids)
    assert hidden.dtype == jnp.bfloat16
    logits = run(mixed, ids)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, run(full, ids), atol=0.05)
    # bfloat16 parameters too.
    assert tiny_model(param_dtype=jnp.bfloat16).embed_tokens.embedding[...].dtype == jnp.bfloat16


@pytest.mark.parametrize("tied", [False, True])
def test_hidden_states_path_equals_logits_path(tied):
    model = tiny_model(tie_embeddings=tied)
    ids = jnp.array([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]])
    mask = ids != 0
    inputs, targets, where = ids[:, :-1], ids[:, 1:], mask[:, 1:]
    logits = run(model, inputs, mask[:, :-1])
    expected = sequence_logps(logits, targets, where=where)
    hidden = nnx.jit(lambda m, x, a: m.hidden_states(x, attention_mask=a))(
        model, inputs, mask[:, :-1]
    )
    got = sequence_logps_from_hidden(hidden, model.unembedding, targets, where=where, chunk_size=4)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_jit_equals_eager_and_does_not_retrace():
    model = tiny_model()
    traces = []

    @nnx.jit
    def forward(model, ids, mask):
        traces.append(None)
        return model(ids, attention_mask=mask)

    ids = jnp.array([[1, 2, 3, 4]])
    mask = jnp.ones((1, 4), bool)
    eager = model(ids, attention_mask=mask)
    np.testing.assert_allclose(forward(model, ids, mask), eager, atol=1e-6)
    forward(model, ids + 1, mask)
    assert len(traces) == 1


def test_input_validation():
    model = tiny_model()
    with pytest.raises(ValueError, match="input_ids"):
        model(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="attention_mask"):
        model(jnp.zeros((2, 3), int), attention_mask=jnp.ones((2, 4), bool))
