"""Tests for jaxpref.models.sampling: KV-cache decoding against full forward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxpref.models import Transformer, TransformerConfig, generate
from jaxpref.models import sampling as sampling_module

PROMPTS = jnp.array([[0, 0, 0, 5, 6], [0, 7, 8, 9, 10], [11, 12, 13, 14, 15]])
PROMPT_MASK = PROMPTS != 0
NEW = 6


def tiny(**overrides):
    return Transformer(TransformerConfig.tiny(**overrides), rngs=nnx.Rngs(0))


def greedy(model):
    return generate(
        model,
        PROMPTS,
        prompt_mask=PROMPT_MASK,
        max_new_tokens=NEW,
        temperature=0.0,
        eos_token_id=(),
    )


@nnx.jit
def _step_logps(model, ids, mask, index):
    logits = model(ids, attention_mask=mask)
    return jax.nn.log_softmax(jnp.take(logits, index, axis=1), axis=-1)


def reference_logps(model, tokens):
    """Step-by-step full forward passes without a cache: ``[batch, NEW, vocab]`` log-probs.

    Step t runs the prompt and the first t generated tokens (later slots are padding keys,
    masked out), and reads the distribution of the next token.
    """
    length = PROMPTS.shape[1]
    out = []
    for t in range(NEW):
        ids = jnp.concatenate([PROMPTS, jnp.where(jnp.arange(NEW) < t, tokens, 0)], axis=1)
        generated = jnp.broadcast_to(jnp.arange(NEW) < t, tokens.shape)
        mask = jnp.concatenate([PROMPT_MASK, generated], axis=1)
        out.append(_step_logps(model, ids, mask, length - 1 + t))
    return np.stack(out, axis=1)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"architecture": "mistral", "sliding_window": 3}, {"architecture": "qwen3"}],
    ids=["llama", "mistral-window", "qwen3"],
)
def test_greedy_cache_decoding_equals_full_forward_passes(overrides):
    model = tiny(**overrides)
    out = greedy(model)
    assert out.tokens.shape == out.logps.shape == out.mask.shape == (3, NEW)
    assert bool(out.mask.all())
    reference = reference_logps(model, out.tokens)
    np.testing.assert_array_equal(out.tokens, reference.argmax(-1))
    picked = np.take_along_axis(reference, np.asarray(out.tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logps, picked, atol=1e-5)


def test_stops_at_eos_and_pads_after_it():
    model = tiny()
    free = greedy(model)
    eos = int(free.tokens[0, 2])
    rows_hit = [
        int(np.argmax(np.asarray(row) == eos)) if eos in row else None for row in free.tokens
    ]
    out = generate(
        model,
        PROMPTS,
        prompt_mask=PROMPT_MASK,
        max_new_tokens=NEW,
        temperature=0.0,
        eos_token_id=eos,
        pad_token_id=127,
    )
    for row, hit in enumerate(rows_hit):
        n = NEW if hit is None else hit + 1
        np.testing.assert_array_equal(out.tokens[row, :n], free.tokens[row, :n])
        np.testing.assert_allclose(out.logps[row, :n], free.logps[row, :n], atol=1e-6)
        assert out.mask[row].tolist() == [True] * n + [False] * (NEW - n)
        assert (np.asarray(out.tokens[row, n:]) == 127).all()
        assert (np.asarray(out.logps[row, n:]) == 0).all()


def test_top_k_one_is_greedy():
    model = tiny()
    top1 = generate(
        model,
        PROMPTS,
        prompt_mask=PROMPT_MASK,
        max_new_tokens=NEW,
        rng=jax.random.key(1),
        top_k=1,
        eos_token_id=(),
    )
    np.testing.assert_array_equal(top1.tokens, greedy(model).tokens)


@pytest.mark.parametrize("options", [{"temperature": 0.7, "top_p": 0.8}, {"top_k": 5}])
def test_sampled_logps_are_untempered_model_logps(options):
    model = tiny()
    out = generate(
        model,
        PROMPTS,
        prompt_mask=PROMPT_MASK,
        max_new_tokens=NEW,
        rng=jax.random.key(0),
        eos_token_id=(),
        **options,
    )
    again = generate(
        model,
        PROMPTS,
        prompt_mask=PROMPT_MASK,
        max_new_tokens=NEW,
        rng=jax.random.key(0),
        eos_token_id=(),
        **options,
    )
    np.testing.assert_array_equal(out.tokens, again.tokens)  # deterministic given the key
    reference = reference_logps(model, out.tokens)
    picked = np.take_along_axis(reference, np.asarray(out.tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logps, picked, atol=1e-5)
    if "top_k" in options:
        rank = (reference > picked[..., None]).sum(-1)
        assert (rank < options["top_k"]).all()


def test_repeated_calls_do_not_recompile():
    model = tiny()
    kwargs = dict(prompt_mask=PROMPT_MASK, max_new_tokens=4, top_p=0.9, eos_token_id=(3,))
    generate(model, PROMPTS, rng=jax.random.key(0), temperature=1.0, **kwargs)
    size = sampling_module._generate._cache_size()
    kwargs["top_p"] = 0.5
    generate(model, PROMPTS + 1, rng=jax.random.key(1), temperature=0.5, **kwargs)
    assert sampling_module._generate._cache_size() == size


def test_argument_errors():
    model = tiny()
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, PROMPTS[:, ::-1], prompt_mask=PROMPT_MASK[:, ::-1], max_new_tokens=2)
    with pytest.raises(ValueError, match="rng"):
        generate(model, PROMPTS, max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, PROMPTS, max_new_tokens=2, rng=jax.random.key(0), top_p=0.0)
