"""Parameter-holding building blocks: a multi-axis dense layer, an embedding, RMSNorm.

Every parameter is an :class:`flax.nnx.Param` whose ``out_sharding`` metadata holds its
*logical* axis names (``("embed", "heads", "head_dim")``...) and whose ``eager_sharding`` is
False. So creating a module never shards anything, with or without an active mesh (flax
0.12 would otherwise try to place each variable on creation and fail without a mesh, or
with logical names that are not mesh axes); :mod:`jaxpref.models.sharding` maps the logical
names to mesh axes when parameters are placed. ``nnx.get_partition_spec`` under
``nnx.logical_axis_rules(rules.flax_rules)`` gives the same specs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["Dense", "Embed", "RMSNorm", "make_param"]

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def make_param(
    rngs: nnx.Rngs | None,
    init: Initializer,
    shape: Sequence[int],
    axes: Sequence[str | None],
    dtype: jnp.dtype,
) -> nnx.Param:
    """An ``nnx.Param`` annotated with logical axes, never eagerly sharded.

    Args:
      rngs: the ``params`` stream is used (may be None for initialisers that ignore the key).
      init: ``init(key, shape, dtype)``.
      shape: the parameter shape.
      axes: one logical axis name (or None) per dimension.
      dtype: the parameter dtype.
    """
    shape, axes = tuple(shape), tuple(axes)
    if len(shape) != len(axes):
        raise ValueError(f"shape {shape} and logical axes {axes} differ in rank.")
    key = rngs.params() if rngs is not None else jax.random.key(0)
    return nnx.Param(init(key, shape, dtype), out_sharding=axes, eager_sharding=False)


class Dense(nnx.Module):
    """``y = x · W (+ b)`` contracting the trailing ``len(in_shape)`` axes of ``x``.

    The kernel is ``[*in_shape, *out_shape]``: e.g. a query projection
    ``[d_model, heads, head_dim]`` or an attention output ``[heads, head_dim, d_model]``. It
    equals a Hugging Face ``nn.Linear`` weight ``[out, in]`` transposed and reshaped.
    The matmul runs in ``dtype`` (inputs and kernel cast to it).
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        *,
        in_axes: Sequence[str | None],
        out_axes: Sequence[str | None],
        use_bias: bool = False,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        stddev: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        self.dtype = dtype
        self.kernel = make_param(
            rngs,
            nnx.initializers.normal(stddev),
            self.in_shape + self.out_shape,
            tuple(in_axes) + tuple(out_axes),
            param_dtype,
        )
        self.bias = (
            make_param(None, nnx.initializers.zeros, self.out_shape, out_axes, param_dtype)
            if use_bias
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_shape)
        if x.shape[x.ndim - n_in :] != self.in_shape:
            raise ValueError(f"Dense expects trailing shape {self.in_shape}, got {x.shape}.")
        y = jnp.tensordot(x.astype(self.dtype), self.kernel[...].astype(self.dtype), axes=n_in)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Embed(nnx.Module):
    """A ``[vocab, d_model]`` token embedding table (logical axes ``("vocab", "embed")``)."""

    def __init__(
        self,
        vocab_size: int,
        features: int,
        *,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        stddev: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.embedding = make_param(
            rngs,
            nnx.initializers.normal(stddev),
            (vocab_size, features),
            ("vocab", "embed"),
            param_dtype,
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)


class RMSNorm(nnx.Module):
    """Root-mean-square normalisation with a learned scale (statistics in float32).

    .. math:: y = w \\odot \\frac{x}{\\sqrt{\\operatorname{mean}(x^2) + \\epsilon}}

    As transformers' ``LlamaRMSNorm``: the normalisation is computed in float32, cast back to
    the input dtype, then scaled.

    References:
      Zhang and Sennrich, Root Mean Square Layer Normalization, 2019, arXiv:1910.07467.
    """

    def __init__(
        self,
        features: int,
        *,
        eps: float,
        axis_name: str | None = "norm",
        param_dtype: jnp.dtype = jnp.float32,
    ):
        self.eps = eps
        self.scale = make_param(None, nnx.initializers.ones, (features,), (axis_name,), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(x.dtype) * normed.astype(x.dtype)
