"""Array aliases and the protocols every objective follows.

Objectives are pure functions of arrays: arrays positional, options keyword-only, and two
options shared by all of them:

* ``where``: a boolean mask over examples (or list items); a masked example contributes
  nothing to the value, nor to the gradient, whatever its inputs hold (even NaN or inf).
* ``reduce_fn``: how per-example losses become one value. ``jnp.mean`` (the default) and
  ``jnp.sum`` are handled so that a fully masked batch gives 0, never NaN; ``None`` returns
  one value per example (0 at masked examples); any other callable is called as
  ``reduce_fn(losses, where=where)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeAlias

import jax
import numpy as np

Array: TypeAlias = jax.Array
ArrayLike: TypeAlias = jax.typing.ArrayLike
#: A boolean mask broadcastable to the per-example loss shape, or None.
Mask: TypeAlias = ArrayLike | None
#: An ``np.ndarray`` or ``jax.Array`` of booleans.
BoolArray: TypeAlias = np.ndarray | jax.Array


class ReduceFn(Protocol):
    """Reduces per-example losses to a value: ``reduce_fn(losses, where=mask)``."""

    def __call__(self, losses: Array, *, where: Array | None = ...) -> Array: ...


class LossFn(Protocol):
    """An objective: arrays positional, options keyword-only, ``where`` and ``reduce_fn``."""

    def __call__(
        self,
        *arrays: ArrayLike,
        where: Mask = None,
        reduce_fn: ReduceFn | Callable[..., Any] | None = ...,
        **options: Any,
    ) -> Array: ...
