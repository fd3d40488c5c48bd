"""Rotary position embeddings (RoPE), with the linear and Llama 3.1 frequency scalings.

The "rotate half" layout Hugging Face uses for the Llama family: the first and second halves
of each head's features are the two coordinates of each rotated pair, so checkpoints need no
permutation.

.. math::

    \\theta_i = b^{-2i/d}, \\qquad
    \\mathrm{RoPE}(x, p) = x \\odot \\cos(p\\theta) + \\mathrm{rot}(x) \\odot \\sin(p\\theta),
    \\qquad \\mathrm{rot}([x_1, x_2]) = [-x_2, x_1]

References:
  Su et al., RoFormer: Enhanced Transformer with Rotary Position Embedding, 2021,
  arXiv:2104.09864. Llama 3.1 scaling: Grattafiori et al., The Llama 3 Herd of Models, 2024,
  arXiv:2407.21783.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxpref.models.config import RopeScaling

__all__ = ["apply_rope", "rope_inverse_frequencies"]


def rope_inverse_frequencies(
    head_dim: int, theta: float, scaling: RopeScaling | None = None
) -> np.ndarray:
    """The ``[head_dim // 2]`` float32 inverse frequencies, after optional scaling.

    Computed in float32 NumPy like transformers' ``_compute_*_parameters`` so that the angles
    agree with a Hugging Face model to float32 rounding.

    Args:
      head_dim: per-head feature size (even).
      theta: the RoPE base ``b``.
      scaling: optional :class:`~jaxpref.models.config.RopeScaling`.

    Returns:
      ``[head_dim // 2]`` float32 array.

    Example:
      >>> from jaxpref.models.rope import rope_inverse_frequencies
      >>> rope_inverse_frequencies(4, 10000.0).tolist()
      [1.0, 0.009999999776482582]
    """
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / (np.float32(theta) ** exponent)).astype(np.float32)
    if scaling is None:
        return inv_freq
    factor = np.float32(scaling.factor)
    if scaling.rope_type == "linear":
        return (inv_freq / factor).astype(np.float32)
    # llama3: keep short wavelengths, divide long ones by `factor`, interpolate in between.
    old_len = np.float32(scaling.original_max_position_embeddings)
    low, high = np.float32(scaling.low_freq_factor), np.float32(scaling.high_freq_factor)
    low_freq_wavelen, high_freq_wavelen = old_len / low, old_len / high
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotates ``x [batch, time, heads, head_dim]`` by the angles ``positions * inv_freq``.

    The angles, cosines and sines are float32; they are cast to ``x.dtype`` before the
    rotation (as transformers does), so a bfloat16 ``x`` is rotated in bfloat16.

    Args:
      x: ``[batch, time, heads, head_dim]`` queries or keys.
      positions: ``[batch, time]`` integer positions.
      inv_freq: ``[head_dim // 2]`` inverse frequencies.

    Returns:
      The rotated array, shape and dtype of ``x``.
    """
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin
