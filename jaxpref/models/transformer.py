"""The decoder: SwiGLU MLP, pre-norm block, and the :class:`Transformer` language model.

Module and parameter names follow Hugging Face's Llama-family modules (``embed_tokens``,
``layers[i].self_attn.q_proj``, ``input_layernorm``, ``mlp.gate_proj``, ``norm``,
``lm_head``), so a checkpoint tensor name is the module path with ``model.`` in front.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpref.models.attention import Attention, KVCache, attention_mask
from jaxpref.models.config import REMAT_POLICIES, TransformerConfig
from jaxpref.models.layers import Dense, Embed, RMSNorm

__all__ = ["MLP", "Block", "Transformer", "default_positions"]


def default_positions(attention_mask: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
    """Positions counting only valid tokens, restarting at 0 in each segment.

    ``positions[b, t]`` is the number of valid (mask True) tokens of ``t``'s segment before
    ``t``; so a left-padded sequence starts at position 0 at its first real token (as
    ``generate`` in transformers does), and each packed sequence starts at 0. Padding
    tokens get the position of the previous valid token (or 0); their outputs are not
    meaningful anyway. Segments must be contiguous runs of equal ids.

    Args:
      attention_mask: ``[batch, time]`` bool or 0/1, True at real tokens.
      segment_ids: optional ``[batch, time]`` int segment ids.

    Returns:
      ``[batch, time]`` int32 positions.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxpref.models import default_positions
      >>> default_positions(jnp.array([[0, 0, 1, 1, 1]])).tolist()
      [[0, 0, 0, 1, 2]]
      >>> default_positions(jnp.ones((1, 5)), jnp.array([[1, 1, 1, 2, 2]])).tolist()
      [[0, 1, 2, 0, 1]]
    """
    valid = jnp.asarray(attention_mask).astype(jnp.int32)
    counts = jnp.cumsum(valid, axis=1)
    if segment_ids is None:
        return jnp.maximum(counts - 1, 0)
    segment_ids = jnp.asarray(segment_ids)
    index = jnp.broadcast_to(jnp.arange(valid.shape[1]), valid.shape)
    first = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], 1
    )
    start = jax.lax.cummax(jnp.where(first, index, 0), axis=1)
    before = jnp.take_along_axis(counts - valid, start, axis=1)
    return jnp.maximum(counts - 1 - before, 0)


class MLP(nnx.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``.

    References:
      Shazeer, GLU Variants Improve Transformer, 2020, arXiv:2002.05202.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        d, f = config.d_model, config.mlp_dim
        common = dict(
            use_bias=config.mlp_bias,
            dtype=config.compute_dtype,
            param_dtype=config.param_dtype,
            stddev=config.initializer_range,
            rngs=rngs,
        )
        self.gate_proj = Dense((d,), (f,), in_axes=("embed",), out_axes=("mlp",), **common)
        self.up_proj = Dense((d,), (f,), in_axes=("embed",), out_axes=("mlp",), **common)
        self.down_proj = Dense((f,), (d,), in_axes=("mlp",), out_axes=("embed",), **common)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
    """Pre-norm decoder layer: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        norm = dict(eps=config.rms_norm_eps, param_dtype=config.param_dtype)
        self.input_layernorm = RMSNorm(config.d_model, **norm)
        self.self_attn = Attention(config, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(config.d_model, **norm)
        self.mlp = MLP(config, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        *,
        positions: jax.Array,
        mask: jax.Array,
        cache: KVCache | None = None,
        cache_index: jax.Array | int | None = None,
    ) -> tuple[jax.Array, KVCache | None]:
        h, cache = self.self_attn(
            self.input_layernorm(x),
            positions=positions,
            mask=mask,
            cache=cache,
            cache_index=cache_index,
        )
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), cache


def _block_forward(block: Block, x: jax.Array, positions: jax.Array, mask: jax.Array):
    return block(x, positions=positions, mask=mask)[0]


def _remat_block_forward(
    block: Block, x: jax.Array, positions: jax.Array, mask: jax.Array, *, policy: Any
) -> jax.Array:
    """``jax.checkpoint`` over a pure function of the block's state.

    ``nnx.remat`` mutates module state from inside its own trace, which fails when the whole
    forward runs under an outer ``jax.value_and_grad`` of split parameters (the training
    engine's functional style); splitting the block and checkpointing a pure function works
    in both styles.
    """
    graph, state = nnx.split(block)

    def pure(state: Any, x: jax.Array) -> jax.Array:
        return _block_forward(nnx.merge(graph, state), x, positions, mask)

    return jax.checkpoint(pure, policy=policy, prevent_cse=True)(state, x)


class Transformer(nnx.Module):
    """A Llama-family decoder-only language model (Llama 2/3, Mistral, Qwen2/2.5/3, SmolLM2).

    Call it on ``input_ids [batch, time]`` for float32 logits ``[batch, time, vocab]``, or use
    :meth:`hidden_states` and :attr:`unembedding` with
    :func:`jaxpref.logprobs.sequence_logps_from_hidden` to avoid materialising the logits.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxpref.models import Transformer, TransformerConfig
      >>> model = Transformer(TransformerConfig.tiny(), rngs=nnx.Rngs(0))
      >>> ids = jnp.array([[5, 6, 7, 0], [1, 2, 3, 4]])
      >>> mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
      >>> model(ids, attention_mask=mask).shape
      (2, 4, 128)
      >>> model.hidden_states(ids, attention_mask=mask).shape, model.unembedding.shape
      ((2, 4, 64), (64, 128))
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed_tokens = Embed(
            config.vocab_size,
            config.d_model,
            dtype=config.compute_dtype,
            param_dtype=config.param_dtype,
            stddev=config.initializer_range,
            rngs=rngs,
        )
        self.layers = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
        self.norm = RMSNorm(config.d_model, eps=config.rms_norm_eps, param_dtype=config.param_dtype)
        if config.tie_embeddings:
            self.lm_head = None
        else:
            self.lm_head = Dense(
                (config.d_model,),
                (config.vocab_size,),
                in_axes=("embed",),
                out_axes=("vocab",),
                dtype=config.compute_dtype,
                param_dtype=config.param_dtype,
                stddev=config.initializer_range,
                rngs=rngs,
            )

    def __call__(
        self,
        input_ids: jax.Array,
        *,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Float32 logits ``[batch, time, vocab]``; arguments as :meth:`hidden_states`."""
        hidden = self.hidden_states(
            input_ids, attention_mask=attention_mask, positions=positions, segment_ids=segment_ids
        )
        return self.logits(hidden)

    def hidden_states(
        self,
        input_ids: jax.Array,
        *,
        attention_mask: jax.Array | None = None,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
    ) -> jax.Array:
        """Final hidden states (after the last RMSNorm), ``[batch, time, d_model]``.

        Args:
          input_ids: ``[batch, time]`` int token ids.
          attention_mask: optional ``[batch, time]`` bool/0-1, False at padding (left or
            right). Padding keys are never attended to; outputs at padding positions are
            finite but meaningless.
          positions: optional ``[batch, time]`` int RoPE positions; default
            :func:`default_positions` of the mask and segment ids.
          segment_ids: optional ``[batch, time]`` int ids of packed sequences: a token
            attends only to earlier tokens with the same id (no id is special; mark padding
            with ``attention_mask``).

        Returns:
          ``[batch, time, d_model]`` in the compute dtype.
        """
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(
                f"input_ids must be an int [batch, time] array, got {input_ids.dtype}"
                f"{list(input_ids.shape)}."
            )
        batch, time = input_ids.shape

        def check(name, value):
            if value is not None and jnp.shape(value) != (batch, time):
                raise ValueError(
                    f"{name} must be [batch, time]={input_ids.shape}, got {jnp.shape(value)}."
                )
            return None if value is None else jnp.asarray(value)

        attention_mask = check("attention_mask", attention_mask)
        positions = check("positions", positions)
        segment_ids = check("segment_ids", segment_ids)
        valid = jnp.ones((batch, time), bool) if attention_mask is None else attention_mask
        valid = valid.astype(bool)
        if positions is None:
            positions = default_positions(valid, segment_ids)
        index = jnp.arange(time)
        masks = {
            window: _self_attention_mask(index, valid, segment_ids, window)
            for window in set(self.config.layer_windows)
        }
        policy = self.config.remat
        forward = (
            _block_forward
            if policy == "none"
            else functools.partial(_remat_block_forward, policy=REMAT_POLICIES[policy])
        )
        x = self.embed_tokens(input_ids)
        for block, window in zip(self.layers, self.config.layer_windows, strict=True):
            x = forward(block, x, positions, masks[window])
        return self.norm(x)

    @property
    def unembedding(self) -> jax.Array:
        """The output projection ``[d_model, vocab]`` (the transposed embedding when tied)."""
        if self.lm_head is None:
            return self.embed_tokens.embedding[...].T
        return self.lm_head.kernel[...]

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Float32 logits ``hidden @ unembedding`` (matmul inputs in the compute dtype)."""
        dtype = self.config.compute_dtype
        return jnp.einsum(
            "...d,dv->...v",
            hidden.astype(dtype),
            self.unembedding.astype(dtype),
            preferred_element_type=jnp.float32,
        )

    def init_cache(
        self, batch_size: int, max_length: int, *, dtype: jnp.dtype | None = None
    ) -> tuple[KVCache, ...]:
        """Zero key/value caches, one per layer, ``[batch, max_length, kv_heads, head_dim]``."""
        cfg = self.config
        shape = (batch_size, max_length, cfg.num_kv_heads, cfg.head_dim)
        dtype = cfg.compute_dtype if dtype is None else dtype
        return tuple(
            KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_layers)
        )

    def decode(
        self,
        input_ids: jax.Array,
        *,
        positions: jax.Array,
        kv_mask: jax.Array,
        cache: tuple[KVCache, ...],
        cache_index: jax.Array | int,
    ) -> tuple[jax.Array, tuple[KVCache, ...]]:
        """Runs ``input_ids [batch, time]`` at cache slots ``[cache_index, cache_index + time)``.

        Used for prefill (``cache_index=0``, the whole prompt) and for each decoding step
        (``time=1``). Each token attends causally (by slot) to the valid cache slots.

        Args:
          input_ids: ``[batch, time]`` int ids.
          positions: ``[batch, time]`` int RoPE positions.
          kv_mask: ``[batch, max_length]`` bool, True at valid slots (including the ones
            being written).
          cache: per-layer :class:`KVCache` from :meth:`init_cache`.
          cache_index: first slot written (scalar).

        Returns:
          ``(float32 logits [batch, time, vocab], updated caches)``.
        """
        time = input_ids.shape[1]
        kv_index = jnp.arange(kv_mask.shape[1])
        q_index = cache_index + jnp.arange(time)
        masks = {
            window: attention_mask(q_index, kv_index, kv_mask, window=window)
            for window in set(self.config.layer_windows)
        }
        x = self.embed_tokens(input_ids)
        new_cache = []
        for block, window, layer_cache in zip(
            self.layers, self.config.layer_windows, cache, strict=True
        ):
            x, layer_cache = block(
                x,
                positions=positions,
                mask=masks[window],
                cache=layer_cache,
                cache_index=cache_index,
            )
            new_cache.append(layer_cache)
        return self.logits(self.norm(x)), tuple(new_cache)


def _self_attention_mask(
    index: jax.Array, valid: jax.Array, segment_ids: jax.Array | None, window: int | None
) -> jax.Array:
    """The ``[batch, time, time]`` self-attention mask of a full (uncached) forward pass."""
    return attention_mask(
        index, index, valid, q_segment=segment_ids, kv_segment=segment_ids, window=window
    )
