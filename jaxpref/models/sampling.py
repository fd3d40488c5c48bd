"""Jit-compiled autoregressive sampling with a key/value cache.

:func:`generate` prefills a batch of *left-padded* prompts in one pass, then decodes one
token per step inside a ``jax.lax.while_loop`` that stops when every row has emitted an end
token or ``max_new_tokens`` is reached. All shapes are fixed by ``(batch, prompt_length,
max_new_tokens)``, so repeated calls with the same shapes (and the same static options:
``max_new_tokens``, greedy or not, ``top_k``, whether ``top_p`` is used, the end and pad ids)
reuse one compilation; ``temperature``, ``top_p``'s value, the prompts and the key are
traced. Pad prompts to a few fixed lengths to bound the number of compilations.

Log-probabilities: ``Generation.logps[b, t]`` is ``log p(token | prefix)`` under the
*unmodified* model distribution (temperature 1, no top-k/top-p truncation), which is what
policy-gradient and importance ratios need. Temperature, top-k and top-p only change which
token is drawn, not the reported log-prob.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxpref.models.transformer import Transformer, default_positions

__all__ = ["Generation", "generate"]


class Generation(NamedTuple):
    """The output of :func:`generate`.

    Attributes:
      tokens: ``[batch, max_new_tokens]`` int32 sampled ids; ``pad_token_id`` after the end
        token.
      logps: ``[batch, max_new_tokens]`` float32 log-probs of ``tokens`` under the model
        (temperature 1, untruncated); 0 after the end token.
      mask: ``[batch, max_new_tokens]`` bool, True at generated tokens (the end token
        included).
    """

    tokens: jax.Array
    logps: jax.Array
    mask: jax.Array


def _filter_logits(
    logits: jax.Array, temperature: jax.Array, top_p: jax.Array, top_k: int | None, use_top_p: bool
) -> jax.Array:
    """Temperature, then top-k, then top-p (nucleus) truncation of ``[batch, vocab]``."""
    logits = logits / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if use_top_p:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        keep = jnp.cumsum(probs, axis=-1) - probs < top_p  # the top token is always kept
        threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, -jnp.inf, logits)
    return logits


@functools.partial(
    jax.jit,
    static_argnames=("graphdef", "max_new_tokens", "greedy", "top_k", "use_top_p", "eos", "pad"),
)
def _generate(
    graphdef,
    state,
    prompt_ids,
    prompt_mask,
    key,
    temperature,
    top_p,
    *,
    max_new_tokens: int,
    greedy: bool,
    top_k: int | None,
    use_top_p: bool,
    eos: tuple[int, ...],
    pad: int,
) -> Generation:
    model = nnx.merge(graphdef, state)
    batch, prompt_len = prompt_ids.shape
    total = prompt_len + max_new_tokens
    kv_mask = jnp.zeros((batch, total), bool).at[:, :prompt_len].set(prompt_mask)
    logits, cache = model.decode(
        prompt_ids,
        positions=default_positions(prompt_mask),
        kv_mask=kv_mask,
        cache=model.init_cache(batch, total),
        cache_index=0,
    )
    next_position = jnp.sum(prompt_mask, axis=-1, dtype=jnp.int32)
    eos_ids = jnp.asarray(eos, jnp.int32)

    def cond(carry):
        step, _, _, done, *_ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        step, tokens, logps, done, last, cache, kv_mask, key = carry
        key, subkey = jax.random.split(key)
        if greedy:
            token = jnp.argmax(last, axis=-1).astype(jnp.int32)
        else:
            filtered = _filter_logits(last, temperature, top_p, top_k, use_top_p)
            token = jax.random.categorical(subkey, filtered, axis=-1).astype(jnp.int32)
        logp = jnp.take_along_axis(jax.nn.log_softmax(last, axis=-1), token[:, None], -1)[:, 0]
        token = jnp.where(done, pad, token)
        tokens = tokens.at[:, step].set(token)
        logps = logps.at[:, step].set(jnp.where(done, 0.0, logp))
        done = done | jnp.any(token[:, None] == eos_ids[None, :], axis=-1)
        slot = prompt_len + step
        kv_mask = kv_mask.at[:, slot].set(True)
        logits, cache = model.decode(
            token[:, None],
            positions=(next_position + step)[:, None],
            kv_mask=kv_mask,
            cache=cache,
            cache_index=slot,
        )
        return step + 1, tokens, logps, done, logits[:, 0], cache, kv_mask, key

    carry = (
        jnp.asarray(0, jnp.int32),
        jnp.full((batch, max_new_tokens), pad, jnp.int32),
        jnp.zeros((batch, max_new_tokens), jnp.float32),
        jnp.zeros((batch,), bool),
        logits[:, -1],
        cache,
        kv_mask,
        key,
    )
    step, tokens, logps, *_ = jax.lax.while_loop(cond, body, carry)
    generated = jnp.arange(max_new_tokens)[None, :] < step
    # A row is generated up to and including its first end token.
    is_eos = jnp.any(tokens[..., None] == eos_ids, axis=-1) & generated
    after_eos = jnp.cumsum(is_eos, axis=-1) - is_eos > 0
    return Generation(tokens, logps, generated & ~after_eos)


def generate(
    model: Transformer,
    prompt_ids: jax.Array,
    *,
    max_new_tokens: int,
    prompt_mask: jax.Array | None = None,
    rng: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> Generation:
    """Samples continuations of a batch of left-padded prompts.

    Args:
      model: a :class:`~jaxpref.models.Transformer`.
      prompt_ids: ``[batch, prompt_length]`` int ids, left-padded.
      max_new_tokens: number of decoding steps (the output length).
      prompt_mask: ``[batch, prompt_length]`` bool, False at (left) padding; default all
        True. The last column must be True for every row.
      rng: a PRNG key; required unless ``temperature == 0``.
      temperature: ``0`` is greedy decoding; otherwise logits are divided by it before
        top-k/top-p and sampling.
      top_k: keep only the ``top_k`` most likely tokens (static; changes recompile).
      top_p: nucleus sampling: keep the smallest set of most likely tokens whose
        probability reaches ``top_p`` (after temperature and top-k).
      eos_token_id: end id(s); default ``model.config.eos_token_id``; ``()`` disables
        stopping.
      pad_token_id: written after the end token; default ``model.config.pad_token_id`` or 0.

    Returns:
      :class:`Generation` with tokens, model log-probs (see the module docstring: the
      temperature does not apply to them) and a mask of generated tokens.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxpref.models import Transformer, TransformerConfig, generate
      >>> model = Transformer(TransformerConfig.tiny(), rngs=nnx.Rngs(0))
      >>> prompts = jnp.array([[0, 0, 3, 4], [5, 6, 7, 8]])
      >>> out = generate(model, prompts, prompt_mask=prompts != 0, max_new_tokens=3,
      ...                temperature=0.0, eos_token_id=())
      >>> out.tokens.shape, out.logps.shape, bool(out.mask.all())
      ((2, 3), (2, 3), True)
    """
    prompt_ids = jnp.asarray(prompt_ids)
    if prompt_ids.ndim != 2 or not jnp.issubdtype(prompt_ids.dtype, jnp.integer):
        raise ValueError(
            f"prompt_ids must be int [batch, time], got {prompt_ids.dtype}{list(prompt_ids.shape)}."
        )
    if prompt_mask is None:
        prompt_mask = jnp.ones(prompt_ids.shape, bool)
    prompt_mask = jnp.asarray(prompt_mask).astype(bool)
    if prompt_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_mask {prompt_mask.shape} must match prompt_ids {prompt_ids.shape}."
        )
    if not isinstance(prompt_mask, jax.core.Tracer) and not np.asarray(prompt_mask[:, -1]).all():
        raise ValueError("Prompts must be left-padded: prompt_mask[:, -1] must be all True.")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}.")
    greedy = temperature == 0
    if not greedy and rng is None:
        raise ValueError("rng is required for sampling (temperature > 0).")
    vocab = model.config.vocab_size
    if top_k is not None and not 0 < top_k <= vocab:
        raise ValueError(f"top_k must be in [1, {vocab}], got {top_k}.")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
    if eos_token_id is None:
        eos = model.config.eos_token_ids
    elif isinstance(eos_token_id, int):
        eos = (eos_token_id,)
    else:
        eos = tuple(int(i) for i in eos_token_id)
    if pad_token_id is None:
        pad_token_id = model.config.pad_token_id or 0
    key = jax.random.key(0) if rng is None else rng
    graphdef, state = nnx.split(model)
    return _generate(
        graphdef,
        state,
        prompt_ids,
        prompt_mask,
        key,
        jnp.asarray(1.0 if greedy else temperature, jnp.float32),
        jnp.asarray(1.0 if top_p is None else top_p, jnp.float32),
        max_new_tokens=int(max_new_tokens),
        greedy=greedy,
        top_k=None if greedy else top_k,
        use_top_p=top_p is not None and not greedy,
        eos=eos,
        pad=int(pad_token_id),
    )
