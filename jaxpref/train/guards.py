"""Guards against non-finite training: a cheap in-step flag and a host-side check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["NonFiniteError", "all_finite", "check_finite"]


class NonFiniteError(FloatingPointError):
    """Raised when a training metric is NaN or infinite.

    Attributes:
      step: the step whose metrics were not finite.
      names: the names of the non-finite metrics, in the order they were given.
    """

    def __init__(self, message: str, *, step: int, names: tuple[str, ...]):
        super().__init__(message)
        self.step = step
        self.names = names


def _describe(value: np.ndarray) -> str:
    if value.size == 1:
        return str(value.reshape(()).item())
    bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
    return f"{bad} of {value.size} elements non-finite"


def check_finite(metrics: Mapping[str, Any], step: int) -> None:
    """Raises :class:`NonFiniteError` if any floating-point metric is NaN or infinite.

    Values are fetched to the host (``np.asarray``), so pass metrics that are already on
    the host (the loop checks the metrics :class:`~jaxpref.train.MetricLogger` returns)
    unless blocking is intended. Integer and boolean metrics are always finite.

    Args:
      metrics: metric name -> scalar or array.
      step: the step the metrics belong to (named in the message).

    Raises:
      NonFiniteError: naming the step and every non-finite metric with its value.

    Example:
      >>> check_finite({"loss": 0.5, "grad_norm": 1.0}, step=3)
      >>> check_finite({"loss": float("nan"), "grad_norm": float("inf")}, step=3)
      Traceback (most recent call last):
      ...
      jaxpref.train.guards.NonFiniteError: non-finite metrics at step 3: loss=nan, grad_norm=inf
    """
    bad = []
    for name, value in metrics.items():
        value = np.asarray(jax.device_get(value))
        if np.issubdtype(value.dtype, np.inexact) and not np.all(np.isfinite(value)):
            bad.append((name, _describe(value)))
    if bad:
        listed = ", ".join(f"{name}={desc}" for name, desc in bad)
        raise NonFiniteError(
            f"non-finite metrics at step {step}: {listed}",
            step=step,
            names=tuple(name for name, _ in bad),
        )


def _dtype(leaf: Any) -> Any:
    return leaf.dtype if hasattr(leaf, "dtype") else jnp.asarray(leaf).dtype


def all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point element of a pytree is finite, as a scalar bool array.

    Works inside ``jit`` (one fused reduction per leaf), so an update step can return it
    as a metric for the loop to check; integer, boolean and PRNG-key leaves are ignored,
    and a tree with no floating-point leaves is finite.

    Args:
      tree: a pytree of arrays (e.g. gradients, or the updated parameters).

    Returns:
      A ``bool`` scalar :class:`jax.Array`.

    Example:
      >>> bool(all_finite({"w": jnp.ones(3), "n": jnp.arange(2)}))
      True
      >>> bool(jax.jit(all_finite)({"w": jnp.array([1.0, jnp.inf])}))
      False
    """
    flags = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree.leaves(tree)
        if jnp.issubdtype(_dtype(leaf), jnp.inexact)
    ]
    if not flags:
        return jnp.array(True)
    return jnp.all(jnp.stack(flags))
