"""Grouped-query self-attention with RoPE, attention masks and a key/value cache.

Masks are boolean ``[batch, query, key]`` arrays built by :func:`attention_mask` from slot
indices (the position of a token in the input or cache array, padding included), key
validity (padding), optional segment ids (packed sequences) and an optional sliding window.
Causality and sliding windows are defined on slot indices, as in transformers, so a
left-padded batch behaves like Hugging Face's; RoPE uses the separate ``positions``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpref.models.config import TransformerConfig
from jaxpref.models.layers import Dense, RMSNorm
from jaxpref.models.rope import apply_rope, rope_inverse_frequencies

__all__ = ["Attention", "KVCache", "attention_mask", "grouped_query_attention"]

# Masked scores are set to the most negative float32; a row with no valid key then gives a
# uniform (finite) distribution instead of NaN. Such rows are padding queries.
_MASKED = float(jnp.finfo(jnp.float32).min)


class KVCache(NamedTuple):
    """One layer's cached keys and values, ``[batch, max_length, kv_heads, head_dim]`` each."""

    key: jax.Array
    value: jax.Array


def attention_mask(
    q_index: jax.Array,
    kv_index: jax.Array,
    kv_valid: jax.Array,
    *,
    q_segment: jax.Array | None = None,
    kv_segment: jax.Array | None = None,
    window: int | None = None,
) -> jax.Array:
    """Which keys each query attends to: causal, valid, same segment, inside the window.

    .. math::

        M_{bts} = [s \\le t] \\wedge v_{bs} \\wedge [g_{bt} = g_{bs}]
                  \\wedge [t - s < w]

    with slot indices ``t`` (query) and ``s`` (key).

    Args:
      q_index: ``[time]`` slot index of each query.
      kv_index: ``[kv_time]`` slot index of each key.
      kv_valid: ``[batch, kv_time]`` bool, False at padding keys.
      q_segment: optional ``[batch, time]`` segment ids of the queries.
      kv_segment: optional ``[batch, kv_time]`` segment ids of the keys (required with
        ``q_segment``).
      window: optional sliding window ``w``.

    Returns:
      ``[batch, time, kv_time]`` bool mask.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxpref.models.attention import attention_mask
      >>> idx = jnp.arange(3)
      >>> attention_mask(idx, idx, jnp.array([[False, True, True]])).astype(int)[0].tolist()
      [[0, 0, 0], [0, 1, 0], [0, 1, 1]]
    """
    mask = (kv_index[None, None, :] <= q_index[None, :, None]) & kv_valid[:, None, :].astype(bool)
    if (q_segment is None) != (kv_segment is None):
        raise ValueError("q_segment and kv_segment must be given together.")
    if q_segment is not None:
        mask = mask & (q_segment[:, :, None] == kv_segment[:, None, :])
    if window is not None:
        mask = mask & (q_index[None, :, None] - kv_index[None, None, :] < window)
    return mask


def grouped_query_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled dot-product attention where each KV head serves ``heads // kv_heads`` queries.

    .. math:: \\mathrm{softmax}\\Big(\\frac{q k^\\top}{\\sqrt{d}} + \\log M\\Big) v

    Query head ``h`` uses KV head ``h // (heads // kv_heads)`` (transformers' ``repeat_kv``),
    without materialising repeated keys. Scores and softmax are float32.

    Args:
      q: ``[batch, time, heads, head_dim]``.
      k: ``[batch, kv_time, kv_heads, head_dim]``.
      v: ``[batch, kv_time, kv_heads, head_dim]``.
      mask: ``[batch, time, kv_time]`` bool.

    Returns:
      ``[batch, time, heads, head_dim]`` in ``v.dtype``.
    """
    b, t, h, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, h // kv_heads, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None, None], scores * (d**-0.5), _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d)


class Attention(nnx.Module):
    """Multi-head attention with grouped KV heads, RoPE and optional q/k RMSNorm (Qwen3).

    Parameters (Hugging Face names): ``q_proj``, ``k_proj``, ``v_proj`` kernels
    ``[d_model, heads|kv_heads, head_dim]``, ``o_proj`` kernel ``[heads, head_dim, d_model]``,
    biases as the config says, and ``q_norm`` / ``k_norm`` scales ``[head_dim]``.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        d, h, k, dh = config.d_model, config.num_heads, config.num_kv_heads, config.head_dim
        common = dict(
            dtype=config.compute_dtype,
            param_dtype=config.param_dtype,
            stddev=config.initializer_range,
            rngs=rngs,
        )
        self.q_proj = Dense(
            (d,),
            (h, dh),
            in_axes=("embed",),
            out_axes=("heads", "head_dim"),
            use_bias=config.qkv_bias,
            **common,
        )
        self.k_proj = Dense(
            (d,),
            (k, dh),
            in_axes=("embed",),
            out_axes=("kv_heads", "head_dim"),
            use_bias=config.qkv_bias,
            **common,
        )
        self.v_proj = Dense(
            (d,),
            (k, dh),
            in_axes=("embed",),
            out_axes=("kv_heads", "head_dim"),
            use_bias=config.qkv_bias,
            **common,
        )
        self.o_proj = Dense(
            (h, dh),
            (d,),
            in_axes=("heads", "head_dim"),
            out_axes=("embed",),
            use_bias=config.out_bias,
            **common,
        )
        if config.qk_norm:
            norm = dict(
                eps=config.rms_norm_eps, axis_name="head_dim", param_dtype=config.param_dtype
            )
            self.q_norm, self.k_norm = RMSNorm(dh, **norm), RMSNorm(dh, **norm)
        else:
            self.q_norm = self.k_norm = None

    def __call__(
        self,
        x: jax.Array,
        *,
        positions: jax.Array,
        mask: jax.Array,
        cache: KVCache | None = None,
        cache_index: jax.Array | int | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        """Attends ``x [batch, time, d_model]``; with a cache, over the cached keys too.

        Args:
          x: ``[batch, time, d_model]`` inputs (already normalised).
          positions: ``[batch, time]`` RoPE positions.
          mask: ``[batch, time, kv_time]`` bool; ``kv_time`` is ``time`` without a cache
            and the cache length with one.
          cache: optional :class:`KVCache`; this call's keys and values are written at
            slots ``[cache_index, cache_index + time)`` and attention runs over all slots.
          cache_index: first cache slot to write (scalar, shared by the batch).

        Returns:
          ``([batch, time, d_model] output, updated cache or None)``.
        """
        cfg = self.config
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        inv_freq = rope_inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)
        if cache is not None:
            start = (0, cache_index, 0, 0)
            keys = jax.lax.dynamic_update_slice(cache.key, k.astype(cache.key.dtype), start)
            values = jax.lax.dynamic_update_slice(cache.value, v.astype(cache.value.dtype), start)
            cache = KVCache(keys, values)
            k, v = keys.astype(q.dtype), values.astype(q.dtype)
        return self.o_proj(grouped_query_attention(q, k, v, mask)), cache
