"""Heads on any backbone's hidden states: scalar reward, per-token value, GPM embedding.

A head takes the ``[batch, time, d_model]`` hidden states of any backbone (e.g.
:meth:`jaxpref.models.Transformer.hidden_states`) and the attention mask; nothing here
depends on the backbone. Sequence-level heads read the hidden state of the *last
non-padding token*, found from the mask (:func:`last_token_index`), so left and right
padding both work. Head outputs are float32.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxpref.models import RewardHead, Transformer, TransformerConfig
  >>> backbone = Transformer(TransformerConfig.tiny(), rngs=nnx.Rngs(0))
  >>> head = RewardHead(64, rngs=nnx.Rngs(1))
  >>> ids = jnp.array([[0, 0, 5, 6], [5, 6, 7, 8]])
  >>> mask = ids != 0  # left padding
  >>> head(backbone.hidden_states(ids, attention_mask=mask), mask).shape
  (2,)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxpref.models.layers import make_param

__all__ = [
    "GPMHead",
    "GPMOutput",
    "RewardHead",
    "ValueHead",
    "gather_last",
    "last_token_index",
]


def last_token_index(mask: jax.Array) -> jax.Array:
    """Index of the last True entry of each row of ``mask [batch, time]`` (0 if none).

    Uses the positions of valid tokens, ``max_t {t : mask[b, t]}``, which is right for
    left padding, right padding and gaps (unlike ``mask.sum(-1) - 1``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxpref.models import last_token_index
      >>> last_token_index(jnp.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0]])).tolist()
      [1, 3, 0]
    """
    mask = jnp.asarray(mask).astype(bool)
    index = jnp.where(mask, jnp.arange(mask.shape[-1]), -1)
    return jnp.maximum(jnp.max(index, axis=-1), 0)


def gather_last(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """``hidden[b, last_token_index(mask)[b]]``: ``[batch, time, d] -> [batch, d]``."""
    index = last_token_index(mask)
    return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]


def _head_kernel(rngs: nnx.Rngs, d_model: int, out: int, param_dtype) -> nnx.Param:
    # std 1 / (d_model + 1), as the GPM and OpenRLHF reward-model value heads.
    init = nnx.initializers.normal(1.0 / (d_model + 1))
    return make_param(rngs, init, (d_model, out), ("embed", None), param_dtype)


class RewardHead(nnx.Module):
    """A scalar reward ``r = w^T h_last (+ b)`` read at the last non-padding token."""

    def __init__(
        self,
        d_model: int,
        *,
        use_bias: bool = False,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.kernel = _head_kernel(rngs, d_model, 1, param_dtype)
        self.bias = (
            make_param(None, nnx.initializers.zeros, (1,), (None,), param_dtype)
            if use_bias
            else None
        )

    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        """``hidden [batch, time, d]``, ``mask [batch, time]`` -> float32 ``[batch]``."""
        last = gather_last(hidden, mask).astype(jnp.float32)
        out = last @ self.kernel[...].astype(jnp.float32)
        if self.bias is not None:
            out = out + self.bias[...].astype(jnp.float32)
        return out[:, 0]


class ValueHead(nnx.Module):
    """A per-token value ``v_t = w^T h_t (+ b)`` (for PPO-style critics)."""

    def __init__(
        self,
        d_model: int,
        *,
        use_bias: bool = True,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.kernel = _head_kernel(rngs, d_model, 1, param_dtype)
        self.bias = (
            make_param(None, nnx.initializers.zeros, (1,), (None,), param_dtype)
            if use_bias
            else None
        )

    def __call__(self, hidden: jax.Array) -> jax.Array:
        """``hidden [batch, time, d]`` -> float32 values ``[batch, time]``."""
        out = hidden.astype(jnp.float32) @ self.kernel[...].astype(jnp.float32)
        if self.bias is not None:
            out = out + self.bias[...].astype(jnp.float32)
        return out[..., 0]


class GPMOutput(NamedTuple):
    """A GPM head's outputs.

    Attributes:
      embedding: ``[batch, 2k]`` float32 preference embeddings ``v_y``.
      prompt_weights: ``[batch, k]`` block weights ``λ(x)`` (positive, mean 1), or None
        without a prompt head.
    """

    embedding: jax.Array
    prompt_weights: jax.Array | None


class GPMHead(nnx.Module):
    """General Preference Model head: a ``2k``-dim preference embedding per response.

    .. math::

        v_y = \\mathrm{normalize?}(W_v^\\top h_{\\mathrm{last}}) \\in \\mathbb{R}^{2k},
        \\qquad
        \\lambda(x) = k \\cdot \\mathrm{softmax}\\big(W_p^\\top h_x / \\sqrt{d}\\big)
        \\in \\mathbb{R}^{k}

    Feed the outputs to :func:`jaxpref.losses.general_preference.general_preference_score`
    (``embedding_a, embedding_b, prompt_weights=...``), which forms the skew-symmetric
    score ``Σ_l λ_l (a_{2l-1} b_{2l} − a_{2l} b_{2l-1})``. ``h_x`` is the hidden state at
    the last prompt token (``prompt_mask``); the released code's prompt head is a bias-free
    linear map, scaled by ``1/sqrt(d_model)`` inside the softmax and by ``k`` after it, so
    uniform weights are 1.

    Args:
      d_model: backbone hidden size ``d``.
      num_blocks: ``k``; the embedding has ``2k`` dimensions.
      prompt_dependent: add the prompt head (``λ(x)``); otherwise ``prompt_weights`` is
        None (all blocks weigh 1).
      normalize: L2-normalise the embedding (the paper's description; the released code
        leaves it off by default).

    References:
      Zhang et al., Beyond Bradley-Terry Models: A General Preference Model for Language
      Model Alignment, 2024, arXiv:2410.02197.
    """

    def __init__(
        self,
        d_model: int,
        num_blocks: int,
        *,
        prompt_dependent: bool = False,
        normalize: bool = False,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}.")
        self.num_blocks, self.normalize, self.d_model = num_blocks, normalize, d_model
        self.kernel = _head_kernel(rngs, d_model, 2 * num_blocks, param_dtype)
        self.prompt_kernel = (
            _head_kernel(rngs, d_model, num_blocks, param_dtype) if prompt_dependent else None
        )

    def __call__(
        self, hidden: jax.Array, mask: jax.Array, *, prompt_mask: jax.Array | None = None
    ) -> GPMOutput:
        """Embeds each response; with a prompt head, also weighs the blocks by the prompt.

        Args:
          hidden: ``[batch, time, d]`` hidden states of prompt + response.
          mask: ``[batch, time]`` attention mask; the embedding is read at its last token.
          prompt_mask: ``[batch, time]`` True at prompt tokens; required with a prompt head
            (the weights are read at its last token).

        Returns:
          :class:`GPMOutput`.
        """
        last = gather_last(hidden, mask).astype(jnp.float32)
        embedding = last @ self.kernel[...].astype(jnp.float32)
        if self.normalize:
            sq = jnp.sum(jnp.square(embedding), axis=-1, keepdims=True)
            embedding = embedding * jax.lax.rsqrt(jnp.maximum(sq, 1e-24))
        if self.prompt_kernel is None:
            if prompt_mask is not None:
                raise ValueError("prompt_mask given but the head has no prompt head.")
            return GPMOutput(embedding, None)
        if prompt_mask is None:
            raise ValueError("A prompt-dependent GPMHead needs prompt_mask.")
        prompt = gather_last(hidden, prompt_mask).astype(jnp.float32)
        scores = prompt @ self.prompt_kernel[...].astype(jnp.float32) / math.sqrt(self.d_model)
        return GPMOutput(embedding, self.num_blocks * jax.nn.softmax(scores, axis=-1))
