"""Tests for jaxpref.logprobs: NumPy/SciPy re-derivations and the chunked custom-VJP path."""

from __future__ import annotations

import doctest
import itertools

import chex
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest
import scipy.special
from jax.sharding import PartitionSpec as P

from jaxpref import _chunked_logps, logprobs
from jaxpref.logprobs import sequence_logps, sequence_logps_from_hidden, token_logps

# ----------------------------------------------------------------------------------------
# Independent NumPy references (float64, explicit loops over the unmasked positions).


def np_token_logps(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    log_softmax = scipy.special.log_softmax(np.asarray(logits, np.float64), axis=-1)
    return np.take_along_axis(log_softmax, targets[..., None], axis=-1)[..., 0]


def np_sequence_logps(logits, targets, where=None, average=False) -> np.ndarray:
    logits, targets = np.asarray(logits, np.float64), np.asarray(targets)
    where = np.ones(targets.shape, bool) if where is None else np.asarray(where)
    out = np.zeros(targets.shape[:-1])
    for index in np.ndindex(*targets.shape[:-1]):
        total, count = 0.0, 0
        for t in range(targets.shape[-1]):
            if where[index][t]:
                row = logits[index][t]
                total += scipy.special.log_softmax(row)[targets[index][t]]
                count += 1
        out[index] = total / max(1, count) if average else total
    return out


def assert_close(actual, expected, rtol: float = 1e-5) -> None:
    """Elementwise ``rtol``, with an absolute floor of ``rtol * max|expected|``."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1e-30))


def random_case(seed: int, lead: tuple[int, ...], time: int, vocab: int, p_mask: float = 0.7):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(*lead, time, vocab)).astype(np.float32)
    targets = rng.integers(0, vocab, size=(*lead, time)).astype(np.int32)
    where = rng.random((*lead, time)) < p_mask
    return logits, targets, where


# ----------------------------------------------------------------------------------------
# token_logps and sequence_logps


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_token_logps_matches_scipy(lead):
    logits, targets, _ = random_case(0, lead, time=5, vocab=11)
    out = token_logps(logits, targets)
    assert out.shape == (*lead, 5) and out.dtype == jnp.float32
    assert_close(out, np_token_logps(logits, targets))


def test_token_logps_out_of_range_target_is_nan():
    logits, targets, _ = random_case(1, (2,), time=3, vocab=7)
    targets[0, 1], targets[1, 2] = 7, -1
    out = np.asarray(token_logps(logits, targets))
    assert np.isnan(out[0, 1]) and np.isnan(out[1, 2])
    assert np.isfinite(out).sum() == out.size - 2


@pytest.mark.parametrize(
    "lead, average, masked", list(itertools.product([(4,), (2, 3)], [False, True], [False, True]))
)
def test_sequence_logps_matches_numpy(lead, average, masked):
    logits, targets, where = random_case(2, lead, time=6, vocab=9)
    where[(0,) * len(lead)] = False  # one fully masked row
    where[(-1,) * len(lead)] = np.arange(6) == 2  # one row with a single token
    where = where if masked else None
    out = sequence_logps(logits, targets, where=where, average=average)
    assert out.shape == lead and out.dtype == jnp.float32
    assert_close(out, np_sequence_logps(logits, targets, where, average))


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_masking_equals_slicing(average):
    logits, targets, _ = random_case(3, (2,), time=8, vocab=5)
    where = np.arange(8) < 5
    masked = sequence_logps(logits, targets, where=np.broadcast_to(where, (2, 8)), average=average)
    sliced = sequence_logps(logits[:, :5], targets[:, :5], average=average)
    assert_close(masked, sliced)


@pytest.mark.parametrize("average", [False, True])
def test_sequence_logps_masked_padding_is_inert(average):
    logits, targets, where = random_case(4, (3,), time=6, vocab=8)
    where[2] = False  # fully masked row
    bad_logits = np.where(where[..., None], logits, -np.inf).astype(np.float32)
    bad_targets = np.where(where, targets, -100).astype(np.int32)

    fn = lambda x: sequence_logps(x, bad_targets, where=where, average=average)
    out = fn(bad_logits)
    assert np.all(np.isfinite(out))
    assert_close(out, np_sequence_logps(logits, targets, where, average))
    assert float(out[2]) == 0.0

    grad = np.asarray(jax.grad(lambda x: fn(x).sum())(bad_logits))
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~where] == 0.0)
    assert np.all(grad[2] == 0.0)
    assert np.any(grad[where] != 0.0)


def test_sequence_logps_bf16_logits():
    logits, targets, where = random_case(5, (3,), time=6, vocab=10)
    logits_bf16 = jnp.asarray(logits, jnp.bfloat16)
    out = sequence_logps(logits_bf16, targets, where=where)
    assert out.dtype == jnp.float32
    # Computed in float32: exact to float32 on the bf16-rounded values...
    rounded = np.asarray(logits_bf16.astype(jnp.float32))
    assert_close(out, np_sequence_logps(rounded, targets, where), rtol=1e-5)
    # ...and within bf16 rounding of the float32 answer.
    np.testing.assert_allclose(out, np_sequence_logps(logits, targets, where), rtol=2e-2, atol=0.1)


def test_input_validation():
    logits, targets, where = random_case(6, (2,), time=3, vocab=4)
    with pytest.raises(TypeError, match="targets"):
        token_logps(logits, targets.astype(np.float32))
    with pytest.raises(TypeError, match="logits"):
        token_logps(targets[..., None], targets)
    with pytest.raises(ValueError, match="targets"):
        sequence_logps(logits, targets[:, :2])
    with pytest.raises(ValueError, match="where"):
        sequence_logps(logits, targets, where=where[:, :2])
    hidden, unembedding = np.ones((2, 3, 5), np.float32), np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match="unembedding"):
        sequence_logps_from_hidden(hidden, unembedding.T, targets)
    with pytest.raises(ValueError, match="chunk_size"):
        sequence_logps_from_hidden(hidden, unembedding, targets, chunk_size=0)


def test_docstring_examples_run():
    result = doctest.testmod(logprobs, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3
    assert result.failed == 0


# ----------------------------------------------------------------------------------------
# sequence_logps_from_hidden (chunked custom VJP)

B, T, D, V = 3, 7, 16, 37  # 21 tokens


def hidden_case(seed: int = 7, lead: tuple[int, ...] = (B,)):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(*lead, T, D)).astype(np.float32)
    unembedding = (0.5 * rng.normal(size=(D, V))).astype(np.float32)
    targets = rng.integers(0, V, size=(*lead, T)).astype(np.int32)
    where = rng.random((*lead, T)) < 0.7
    where[(0,) * len(lead)] = False  # one fully masked row
    return hidden, unembedding, targets, where


def value_and_grads(fn, hidden, unembedding):
    value = fn(hidden, unembedding)
    grads = jax.grad(lambda h, w: jnp.sum(fn(h, w) * jnp.arange(1.0, value.size + 1)), (0, 1))(
        hidden, unembedding
    )
    return value, grads


def naive(targets, where, average):
    return lambda h, w: sequence_logps(h @ w, targets, where=where, average=average)


def chunked(targets, where, average, chunk_size):
    return lambda h, w: sequence_logps_from_hidden(
        h, w, targets, where=where, average=average, chunk_size=chunk_size
    )


@pytest.mark.parametrize(
    "chunk_size, masked, average",
    list(itertools.product([None, 1, 3, 4, 21, 64], [False, True], [False, True])),
)
def test_chunked_matches_naive(chunk_size, masked, average):
    hidden, unembedding, targets, where = hidden_case()
    where = where if masked else None
    value, (d_h, d_w) = value_and_grads(
        chunked(targets, where, average, chunk_size), hidden, unembedding
    )
    ref_value, (ref_d_h, ref_d_w) = value_and_grads(
        naive(targets, where, average), hidden, unembedding
    )
    assert value.shape == (B,) and value.dtype == jnp.float32
    assert d_h.dtype == jnp.float32 and d_w.dtype == jnp.float32
    assert_close(value, ref_value)
    assert_close(d_h, ref_d_h)
    assert_close(d_w, ref_d_w)


def test_chunked_multi_block_unembedding_gradient(monkeypatch):
    # A tiny budget forces d_unembedding to be accumulated in 7 blocks of 5 vocab columns
    # plus a remainder block of 2, and 2-token automatic chunks.
    monkeypatch.setattr(_chunked_logps, "LOGITS_BUDGET", 5 * D)
    assert _chunked_logps.auto_chunk_size(B * T, V) == 2
    hidden, unembedding, targets, where = hidden_case(8)
    value, grads = value_and_grads(chunked(targets, where, False, None), hidden, unembedding)
    ref_value, ref_grads = value_and_grads(naive(targets, where, False), hidden, unembedding)
    assert_close(value, ref_value)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert_close(grad, ref_grad)


@pytest.mark.parametrize("average", [False, True])
def test_chunked_masked_tokens_are_inert(average):
    hidden, unembedding, targets, where = hidden_case(9)
    bad_hidden = np.where(where[..., None], hidden, np.nan).astype(np.float32)
    bad_hidden[1, ~where[1]] = np.inf
    bad_targets = np.where(where, targets, -100).astype(np.int32)
    clean_hidden = np.where(where[..., None], hidden, 0.0).astype(np.float32)

    value, (d_h, d_w) = value_and_grads(
        chunked(bad_targets, where, average, 4), bad_hidden, unembedding
    )
    ref_value, (ref_d_h, ref_d_w) = value_and_grads(
        naive(targets, where, average), clean_hidden, unembedding
    )
    assert np.all(np.isfinite(value)) and float(value[0]) == 0.0
    assert_close(value, ref_value)
    assert np.all(np.isfinite(d_h)) and np.all(np.isfinite(d_w))
    assert np.all(np.asarray(d_h)[~where] == 0.0) and np.all(np.asarray(d_h)[0] == 0.0)
    assert_close(d_h, ref_d_h)
    assert_close(d_w, ref_d_w)


def test_chunked_all_masked_is_zero_with_zero_grads():
    hidden, unembedding, targets, _ = hidden_case(10)
    where = np.zeros(targets.shape, bool)
    for average in (False, True):
        value, (d_h, d_w) = value_and_grads(
            chunked(targets, where, average, 5), hidden, unembedding
        )
        assert np.all(np.asarray(value) == 0.0)
        assert np.all(np.asarray(d_h) == 0.0) and np.all(np.asarray(d_w) == 0.0)


def test_chunked_skips_the_projection_of_unscored_chunks(monkeypatch):
    """Prompt-like layout: each row's first tokens unscored. After the scored-first reorder
    only ceil(scored / chunk) chunks are projected, in the forward and in the backward."""
    projected = []
    original = _chunked_logps._chunk_logits

    def counting(h, w):
        jax.debug.callback(lambda: projected.append(1))
        return original(h, w)

    monkeypatch.setattr(_chunked_logps, "_chunk_logits", counting)
    rows, length, chunk = 6, 10, 4
    rng = np.random.default_rng(12)
    hidden = rng.normal(size=(rows, length, D)).astype(np.float32)
    unembedding = (0.5 * rng.normal(size=(D, V))).astype(np.float32)
    targets = rng.integers(0, V, size=(rows, length)).astype(np.int32)
    where = np.arange(length) >= rng.integers(3, 8, size=(rows, 1))  # a masked prefix per row
    scored_chunks = -(-int(where.sum()) // chunk)
    assert scored_chunks < rows * length // chunk  # something to skip

    fn = chunked(targets, where, False, chunk)
    value = jax.block_until_ready(fn(hidden, unembedding))
    assert len(projected) == scored_chunks
    jax.block_until_ready(jax.grad(lambda h, w: fn(h, w).sum(), (0, 1))(hidden, unembedding))
    assert len(projected) == scored_chunks + 2 * scored_chunks  # forward again, then backward
    ref_value, ref_grads = value_and_grads(naive(targets, where, False), hidden, unembedding)
    assert_close(value, ref_value)
    _, grads = value_and_grads(fn, hidden, unembedding)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert_close(grad, ref_grad)


def test_chunked_jit_equals_eager():
    hidden, unembedding, targets, where = hidden_case(11)

    def fn(h, w, t, m):
        return sequence_logps_from_hidden(h, w, t, where=m, average=True, chunk_size=4)

    grad_fn = jax.grad(lambda *a: fn(*a).sum(), (0, 1))
    args = (hidden, unembedding, targets, where)
    assert_close(jax.jit(fn)(*args), fn(*args))
    for jitted, eager in zip(jax.jit(grad_fn)(*args), grad_fn(*args), strict=True):
        assert_close(jitted, eager)


def test_chunked_under_vmap_matches_leading_axes():
    hidden, unembedding, targets, where = hidden_case(12, lead=(2, B))

    def fn(h, w, t, m):
        return sequence_logps_from_hidden(h, w, t, where=m, chunk_size=5)

    def loss(h, w, t, m):
        return jax.vmap(fn, in_axes=(0, None, 0, 0))(h, w, t, m).sum()

    direct = fn(hidden, unembedding, targets, where)
    mapped = jax.vmap(fn, in_axes=(0, None, 0, 0))(hidden, unembedding, targets, where)
    assert mapped.shape == (2, B)
    assert_close(mapped, direct)
    grads = jax.grad(loss, (0, 1))(hidden, unembedding, targets, where)
    ref_grads = jax.grad(lambda h, w: fn(h, w, targets, where).sum(), (0, 1))(hidden, unembedding)
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert_close(grad, ref_grad)


def test_chunked_bf16_inputs():
    hidden, unembedding, targets, where = hidden_case(13)
    h16, w16 = jnp.asarray(hidden, jnp.bfloat16), jnp.asarray(unembedding, jnp.bfloat16)
    value, (d_h, d_w) = value_and_grads(chunked(targets, where, False, 4), h16, w16)
    assert value.dtype == jnp.float32
    assert d_h.dtype == jnp.bfloat16 and d_w.dtype == jnp.bfloat16
    for x in (value, d_h, d_w):
        assert np.all(np.isfinite(np.asarray(x, np.float32)))
    # Reference: float32 math on the same bf16-rounded inputs.
    h32, w32 = h16.astype(jnp.float32), w16.astype(jnp.float32)
    ref_value, (ref_d_h, ref_d_w) = value_and_grads(naive(targets, where, False), h32, w32)
    assert_close(value, ref_value, rtol=1e-4)
    assert_close(np.asarray(d_h, np.float32), ref_d_h, rtol=1e-2)
    assert_close(np.asarray(d_w, np.float32), ref_d_w, rtol=1e-2)


def test_chunked_under_shard_map_matches_naive():
    # 8 fake CPU devices (tests/conftest.py), batch sharded, unembedding replicated.
    mesh = jax.make_mesh((8,), ("data",))
    rng = np.random.default_rng(16)
    hidden = rng.normal(size=(8, 5, D)).astype(np.float32)
    unembedding = (0.5 * rng.normal(size=(D, V))).astype(np.float32)
    targets = rng.integers(0, V, size=(8, 5)).astype(np.int32)
    where = rng.random((8, 5)) < 0.7
    data, replicated = jax.NamedSharding(mesh, P("data")), jax.NamedSharding(mesh, P())

    fn = jax.shard_map(
        lambda h, w, t, m: sequence_logps_from_hidden(h, w, t, where=m, chunk_size=2),
        mesh=mesh,
        in_specs=(P("data"), P(), P("data"), P("data")),
        out_specs=P("data"),
    )
    loss = lambda h, w, t, m: jnp.sum(fn(h, w, t, m) * jnp.arange(1.0, 9.0))
    args = [
        jax.device_put(x, s)
        for x, s in zip(
            (hidden, unembedding, targets, where), (data, replicated, data, data), strict=True
        )
    ]
    value, grads = jax.jit(jax.value_and_grad(loss, (0, 1)))(*args)
    ref_value, ref_grads = value_and_grads(naive(targets, where, False), hidden, unembedding)
    assert_close(value, np.sum(np.asarray(ref_value) * np.arange(1.0, 9.0)))
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert_close(grad, ref_grad)


def test_chunked_check_grads():
    rng = np.random.default_rng(14)
    hidden = rng.normal(size=(2, 3, 4)).astype(np.float32)
    unembedding = rng.normal(size=(4, 6)).astype(np.float32)
    targets = rng.integers(0, 6, size=(2, 3)).astype(np.int32)
    where = np.array([[True, True, False], [True, False, True]])
    fn = lambda h, w: sequence_logps_from_hidden(
        h, w, targets, where=where, average=True, chunk_size=4
    )
    jax.test_util.check_grads(fn, (hidden, unembedding), order=1, modes=("rev",))


def test_auto_chunk_size_respects_budget():
    for n_tokens, vocab in [(1, 7), (100, 7), (4096, 32768), (10_000, 128_256), (3, 2**25)]:
        chunk = _chunked_logps.auto_chunk_size(n_tokens, vocab)
        num_chunks = -(-n_tokens // chunk)
        assert 1 <= chunk <= n_tokens
        assert chunk * vocab <= max(_chunked_logps.LOGITS_BUDGET, vocab)
        assert num_chunks * chunk - n_tokens < 8 * num_chunks  # little padding


def test_chunked_gradient_memory_is_a_fraction_of_naive():
    # Compile only: nothing of this size is allocated.
    batch, time, d_model, vocab = 2, 1024, 256, 32768
    specs = (
        jax.ShapeDtypeStruct((batch, time, d_model), jnp.float32),
        jax.ShapeDtypeStruct((d_model, vocab), jnp.float32),
        jax.ShapeDtypeStruct((batch, time), jnp.int32),
    )

    def temp_bytes(fn):
        grad_fn = jax.jit(jax.grad(lambda h, w, t: fn(h, w, t).sum(), (0, 1)))
        return grad_fn.lower(*specs).compile().memory_analysis().temp_size_in_bytes

    naive_temp = temp_bytes(lambda h, w, t: sequence_logps(h @ w, t))
    chunked_temp = temp_bytes(sequence_logps_from_hidden)
    message = f"chunked temp {chunked_temp / 2**20:.1f} MiB, naive {naive_temp / 2**20:.1f} MiB"
    assert chunked_temp <= naive_temp / 4, message


def test_no_recompilation_on_second_call():
    hidden, unembedding, targets, where = hidden_case(15)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(h, w, t, m):
        loss = lambda h, w: sequence_logps_from_hidden(h, w, t, where=m).sum()
        return jax.value_and_grad(loss, (0, 1))(h, w)

    first = step(hidden, unembedding, targets, where)
    second = step(hidden + 1.0, unembedding * 2.0, (targets + 1) % V, ~where)
    assert not np.allclose(first[0], second[0])
    with pytest.raises(AssertionError):  # the counter is live: new shapes do retrace
        step(hidden[:, :3], unembedding, targets[:, :3], where[:, :3])
