"""Tests for jaxpref.models.heads: last-token reads under both paddings, value and GPM heads."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpref.losses.general_preference import general_preference_score
from jaxpref.models import (
    GPMHead,
    RewardHead,
    Transformer,
    TransformerConfig,
    ValueHead,
    gather_last,
    last_token_index,
)

D = 64


@pytest.fixture(scope="module")
def backbone():
    return Transformer(TransformerConfig.tiny(), rngs=nnx.Rngs(0))


@nnx.jit
def hidden(model, ids, mask):
    return model.hidden_states(ids, attention_mask=mask)


def test_last_token_index_against_a_loop():
    rng = np.random.default_rng(0)
    mask = rng.random((20, 7)) < 0.5
    expected = [max([t for t in range(7) if row[t]], default=0) for row in mask]
    assert last_token_index(mask).tolist() == expected


def padded(sequences, length, side):
    ids = np.zeros((len(sequences), length), np.int32)
    mask = np.zeros((len(sequences), length), bool)
    for i, seq in enumerate(sequences):
        span = slice(length - len(seq), length) if side == "left" else slice(0, len(seq))
        ids[i, span], mask[i, span] = seq, True
    return jnp.asarray(ids), jnp.asarray(mask)


SEQUENCES = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]


def test_reward_head_reads_the_last_real_token_for_both_paddings(backbone):
    head = RewardHead(D, use_bias=True, rngs=nnx.Rngs(1))
    unpadded = []
    for seq in SEQUENCES:
        ones = jnp.ones((1, len(seq)), bool)
        unpadded.append(head(hidden(backbone, jnp.array([seq]), ones), ones)[0])
    for side in ("left", "right"):
        ids, mask = padded(SEQUENCES, 6, side)
        rewards = head(hidden(backbone, ids, mask), mask)
        assert rewards.shape == (3,) and rewards.dtype == jnp.float32
        np.testing.assert_allclose(rewards, np.array(unpadded), atol=1e-5, err_msg=side)


def test_gather_last_picks_the_last_real_position():
    h = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    mask = jnp.array([[1, 1, 0, 0], [0, 1, 1, 1]], bool)
    np.testing.assert_array_equal(gather_last(h, mask), h[jnp.array([0, 1]), jnp.array([1, 3])])


def test_value_head_is_per_token(backbone):
    head = ValueHead(D, rngs=nnx.Rngs(2))
    ids, mask = padded(SEQUENCES, 6, "right")
    h = hidden(backbone, ids, mask)
    values = head(h)
    assert values.shape == (3, 6) and values.dtype == jnp.float32
    kernel = np.asarray(head.kernel[...])[:, 0]
    np.testing.assert_allclose(values, np.asarray(h) @ kernel + head.bias[...][0], atol=1e-5)


def test_gpm_head_shapes_and_skew_symmetric_scores(backbone):
    k = 3
    head = GPMHead(D, k, prompt_dependent=True, rngs=nnx.Rngs(3))
    prompt = [5, 6]
    responses = [[7, 8, 9], [10, 11], [12, 13, 14]]
    ids, mask = padded([prompt + r for r in responses], 6, "left")
    prompt_mask = mask & (jnp.cumsum(mask, axis=1) <= len(prompt))
    out = head(hidden(backbone, ids, mask), mask, prompt_mask=prompt_mask)
    assert out.embedding.shape == (3, 2 * k) and out.prompt_weights.shape == (3, k)
    weights = np.asarray(out.prompt_weights)
    assert (weights > 0).all()
    np.testing.assert_allclose(weights.sum(-1), k, rtol=1e-5)
    # Same prompt in every row: the same block weights.
    np.testing.assert_allclose(weights, np.broadcast_to(weights[:1], weights.shape), atol=1e-5)
    a, b = out.embedding[:, None], out.embedding[None, :]
    lam = out.prompt_weights[:, None]
    table = general_preference_score(a, b, prompt_weights=lam)
    np.testing.assert_array_equal(table, -general_preference_score(b, a, prompt_weights=lam))
    np.testing.assert_array_equal(np.diag(table), 0.0)


def test_gpm_head_without_prompt_head_and_normalized(backbone):
    head = GPMHead(D, 2, normalize=True, rngs=nnx.Rngs(4))
    ids, mask = padded(SEQUENCES, 6, "right")
    out = head(hidden(backbone, ids, mask), mask)
    assert out.prompt_weights is None
    np.testing.assert_allclose(np.linalg.norm(out.embedding, axis=-1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="no prompt head"):
        head(hidden(backbone, ids, mask), mask, prompt_mask=mask)
    with pytest.raises(ValueError, match="needs prompt_mask"):
        GPMHead(D, 2, prompt_dependent=True, rngs=nnx.Rngs(0))(jnp.zeros((1, 2, D)), mask[:1, :2])
