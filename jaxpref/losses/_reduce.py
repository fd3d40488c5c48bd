"""The masked-reduction and input-boundary helpers that every objective uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpref.types import Array, ArrayLike, Mask


def as_float(x: ArrayLike, name: str) -> Array:
    """Converts an input to a floating array computed in at least float32.

    bfloat16/float16 inputs are cast up to float32 (as gemma does before ``log_softmax``);
    float64 stays float64 when x64 is enabled. Integer and boolean inputs are promoted.

    Raises:
      TypeError: if ``x`` is complex, naming the argument.
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real-valued, got dtype {x.dtype}")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def as_constant(x: ArrayLike, name: str) -> Array:
    """:func:`as_float` behind ``stop_gradient``: targets, references, fixed weights."""
    return jax.lax.stop_gradient(as_float(x, name))


def as_mask(where: Mask, shape: tuple[int, ...], name: str = "where") -> Array | None:
    """Broadcasts ``where`` to ``shape`` as a boolean array (None stays None)."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"{name} must be a boolean mask, got dtype {where.dtype}")
    try:
        return jnp.broadcast_to(where, shape)
    except ValueError as err:
        raise ValueError(
            f"{name} of shape {where.shape} does not broadcast to the per-example shape {shape}"
        ) from err


def sanitize(where: Array | None, x: Array, fill: float = 0.0) -> Array:
    """Replaces masked entries by ``fill`` BEFORE any arithmetic (the double-where trick).

    This keeps NaN/inf in masked entries out of both values and gradients. ``where`` is
    broadcast against ``x`` from the left (a per-example mask on per-token inputs).
    """
    if where is None:
        return x
    mask = (
        where.reshape(where.shape + (1,) * (x.ndim - where.ndim)) if x.ndim > where.ndim else where
    )
    return jnp.where(mask, x, jnp.asarray(fill, x.dtype))


def reduce_losses(
    losses: Array,
    *,
    where: Array | None = None,
    reduce_fn: Callable[..., Any] | None = jnp.mean,
) -> Array:
    """Masks per-example ``losses`` and reduces them.

    Args:
      losses: per-example losses ``[...]``.
      where: boolean mask of the same shape, or None. Masked losses are set to exactly 0.
      reduce_fn: ``jnp.mean`` (mean over unmasked entries, 0 when none is unmasked),
        ``jnp.sum``, ``None`` (per-example values), or a callable ``f(losses, where=where)``.

    Returns:
      The reduced loss, or the masked per-example losses when ``reduce_fn`` is None.
    """
    if where is not None:
        losses = jnp.where(where, losses, jnp.zeros((), losses.dtype))
    if reduce_fn is None:
        return losses
    if reduce_fn is jnp.mean or reduce_fn is np.mean:
        if where is None:
            return jnp.mean(losses) if losses.size else jnp.zeros((), losses.dtype)
        count = jnp.sum(where, dtype=losses.dtype)
        return jnp.sum(losses) / jnp.maximum(count, 1)
    if reduce_fn is jnp.sum or reduce_fn is np.sum:
        return jnp.sum(losses)
    return reduce_fn(losses, where=where)


def is_traced(x: Any) -> bool:
    """True when ``x`` is a tracer (its value is unknown at trace time)."""
    return isinstance(x, jax.core.Tracer)


def check_static_range(
    value: Any, name: str, *, low: float, high: float, high_inclusive: bool = True
) -> None:
    """Raises ValueError if a concrete ``value`` lies outside ``[low, high]`` (or ``[low, high)``).

    Traced values (under ``jit``/``vmap`` of the option itself) cannot be checked at trace time
    and are let through; the docstrings of the callers say so.
    """
    if is_traced(value):
        return
    arr = np.asarray(value, dtype=np.float64)
    bad_low = arr < low
    bad_high = arr > high if high_inclusive else arr >= high
    if np.any(np.isnan(arr) | bad_low | bad_high):
        bracket = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must lie in [{low}, {high}{bracket}, got {value!r}")
