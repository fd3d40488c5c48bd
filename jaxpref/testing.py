"""Property checks that every jaxpref objective passes, reusable for new objectives.

Describe an objective with an :class:`ObjectiveCase` (the function, a generator of valid
inputs, options, which arguments are differentiable) and run :func:`check_objective`, or
one check at a time from :data:`CHECKS`. Each check raises ``AssertionError`` with a message
naming the objective and what failed.

Masks are per example by default (``where`` has the batch shape). Listwise and group
objectives mask list items instead: with ``mask_level="items"``, ``where`` is
``[*batch, list_size]`` and "masking equals slicing" is checked per list. A list with some
items masked must give the loss of the same list with those items removed. Masked items
poisoned with NaN/inf must change nothing and get zero gradient. A list with fewer than
two valid items must contribute nothing, and an all-masked batch must give 0.

>>> import numpy as np
>>> from jaxpref import losses
>>> def make_args(rng, batch_shape, scale):
...     return tuple(scale * rng.standard_normal(batch_shape).astype(np.float32)
...                  for _ in range(4))
>>> case = ObjectiveCase("dpo", losses.dpo, make_args, grad_argnums=(0, 1))
>>> check_objective(case, checks=("jit", "fully_masked"))
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["CHECKS", "MASK_LEVELS", "ObjectiveCase", "check_objective"]

#: What ``where`` masks: whole examples, or items of a list (the axis after the batch axes).
MASK_LEVELS = ("examples", "items")

#: ``make_args(rng, batch_shape, scale) -> tuple of arrays``: every batched argument has
#: ``batch_shape`` as its leading dims; unbatched (shared) arguments have other shapes.
#: With ``mask_level="items"`` the per-item arguments are ``[*batch_shape, list_size, ...]``
#: (the list axis right after the batch axes) and per-list arguments ``[*batch_shape]``.
#: ``scale`` is the magnitude of log-prob / reward inputs (1e4 for the extremes check).
MakeArgs = Callable[[np.random.Generator, tuple[int, ...], float], tuple[Any, ...]]


@dataclasses.dataclass(frozen=True)
class ObjectiveCase:
    """An objective plus what the property checks need to know about it.

    Attributes:
      name: shown in failure messages.
      fn: the objective, called as ``fn(*args, where=..., reduce_fn=..., **kwargs)``.
      make_args: generator of valid inputs (see :data:`MakeArgs`).
      kwargs: keyword options passed on every call.
      grad_argnums: arguments the loss is differentiated with respect to (not the
        stop-gradient ones, such as reference log-probs).
      scale: input magnitude for ordinary checks.
      rtol: relative tolerance of value comparisons.
    """

    name: str
    fn: Callable[..., Any]
    make_args: MakeArgs
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    grad_argnums: tuple[int, ...] = (0,)
    scale: float = 3.0
    rtol: float = 1e-5
    mask_level: str = "examples"

    def __post_init__(self) -> None:
        if self.mask_level not in MASK_LEVELS:
            raise ValueError(f"mask_level must be one of {MASK_LEVELS}, got {self.mask_level!r}")

    def __call__(self, *args: Any, **options: Any) -> jax.Array:
        return self.fn(*args, **{**self.kwargs, **options})


def _fail(case: ObjectiveCase, message: str) -> AssertionError:
    return AssertionError(f"[{case.name}] {message}")


def _args(case: ObjectiveCase, batch_shape: tuple[int, ...], *, seed: int = 0, scale=None):
    rng = np.random.default_rng(seed)
    return tuple(case.make_args(rng, batch_shape, case.scale if scale is None else scale))


def _is_batched(arg: Any, batch_shape: tuple[int, ...]) -> bool:
    shape = np.shape(arg)
    return shape[: len(batch_shape)] == batch_shape


def _is_float(arg: Any) -> bool:
    return np.issubdtype(np.asarray(arg).dtype, np.floating) or (
        hasattr(arg, "dtype") and jnp.issubdtype(arg.dtype, jnp.floating)
    )


def _close(case: ObjectiveCase, actual: Any, expected: Any, what: str, rtol=None) -> None:
    rtol = case.rtol if rtol is None else rtol
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape or not np.allclose(a, e, rtol=rtol, atol=rtol):
        raise _fail(case, f"{what}: got {a!r}, expected {e!r}")


def _grad(case: ObjectiveCase, args: tuple, **options: Any) -> tuple:
    def loss(*diff):
        full = list(args)
        for i, d in zip(case.grad_argnums, diff, strict=True):
            full[i] = d
        return jnp.sum(case(*full, **options))

    return jax.grad(loss, argnums=tuple(range(len(case.grad_argnums))))(
        *(args[i] for i in case.grad_argnums)
    )


def _mask(batch_shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1000)
    mask = rng.random(batch_shape) < 0.6
    flat = mask.reshape(-1)
    flat[0], flat[-1] = True, False  # at least one of each
    return mask


def _list_size(case: ObjectiveCase, args: tuple, batch_shape: tuple[int, ...]) -> int:
    for a in args:
        if _is_batched(a, batch_shape) and np.ndim(a) > len(batch_shape):
            return int(np.shape(a)[len(batch_shape)])
    raise _fail(case, "mask_level='items' needs an argument of shape [*batch, list_size, ...]")


def _item_mask(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random item mask with, when the batch allows, a full list, an all-masked list, a list
    with one valid item and a list whose last item is masked (tail padding)."""
    rng = np.random.default_rng(seed + 1000)
    mask = rng.random(shape) < 0.7
    rows = mask.reshape(-1, shape[-1])
    rows[0] = True
    rows[-1] = False
    if rows.shape[0] > 3:
        rows[1] = False
        rows[1, shape[-1] // 2] = True
        rows[2] = True
        rows[2, -1] = False
    return mask


def _where(case: ObjectiveCase, args: tuple, batch_shape: tuple[int, ...], seed: int):
    """The ``where`` mask a check uses: per example, or per item for ``mask_level="items"``."""
    if case.mask_level == "examples":
        return _mask(batch_shape, seed)
    return _item_mask((*batch_shape, _list_size(case, args, batch_shape)), seed)


def _poison(mask: np.ndarray, arg: Any) -> Any:
    """Replaces ``arg`` entries where ``mask`` is False by NaN, inf and -inf in turn."""
    a = np.asarray(arg)
    values = np.array([np.nan, np.inf, -np.inf])[np.arange(mask.size).reshape(mask.shape) % 3]
    extra = (1,) * (a.ndim - mask.ndim)
    keep = mask.reshape(mask.shape + extra)
    return np.where(keep, a, values.reshape(mask.shape + extra)).astype(a.dtype)


def _count_reduce(losses, where=None):
    """A ``reduce_fn`` returning how many per-example values the objective counts."""
    return jnp.asarray(losses.size if where is None else jnp.sum(where), jnp.float32)


def _check_item_mask_equals_slice(case: ObjectiveCase) -> None:
    batch = (9,)
    axis = len(batch)
    args = _args(case, batch)
    mask = _where(case, args, batch, 0)
    per = np.asarray(case(*args, where=mask, reduce_fn=None))
    if per.shape != batch:
        raise _fail(case, f"per-list losses must have shape {batch}, got {per.shape}")
    total, count = 0.0, 0.0
    for r in range(batch[0]):
        keep = mask[r]
        if keep.sum() < 2:
            if per[r] != 0:
                raise _fail(case, f"list {r} with {keep.sum()} valid item(s) must give 0: {per[r]}")
            continue
        row = tuple(
            (np.asarray(a)[r : r + 1][:, keep] if np.ndim(a) > axis else np.asarray(a)[r : r + 1])
            if _is_batched(a, batch)
            else a
            for a in args
        )
        value = np.asarray(case(*row, reduce_fn=None))
        _close(case, per[r : r + 1], value, f"list {r} with masked items vs the sliced list")
        total += float(value[0])
        count += float(case(*row, reduce_fn=_count_reduce))
    _close(case, case(*args, where=mask, reduce_fn=jnp.sum), total, "masked sum vs sliced lists")
    _close(
        case,
        case(*args, where=mask),
        total / max(count, 1.0),
        "masked mean vs the mean over the sliced lists that count",
    )

    poisoned = tuple(
        _poison(mask, a) if _is_batched(a, batch) and np.ndim(a) > axis and _is_float(a) else a
        for a in args
    )
    _close(case, case(*poisoned, where=mask), case(*args, where=mask), "NaN/inf in masked items")
    inert = ~mask | (mask.sum(-1, keepdims=True) < 2)
    for i, g in zip(case.grad_argnums, _grad(case, poisoned, where=mask), strict=True):
        g = np.asarray(g)
        if not np.all(np.isfinite(g)):
            raise _fail(case, f"gradient of argument {i} not finite with NaN/inf in masked items")
        if np.ndim(args[i]) > axis and _is_batched(args[i], batch):
            at = inert.reshape(inert.shape + (1,) * (g.ndim - inert.ndim))
            if np.any(np.where(at, g, 0) != 0):
                raise _fail(
                    case, f"gradient of argument {i} nonzero at masked items or short lists"
                )


def check_mask_equals_slice(case: ObjectiveCase) -> None:
    """Masked reduction equals the loss of the sliced pairs; masked entries are 0 and inert.

    Also poisons masked entries of every float input with NaN/inf and requires identical
    values and finite gradients that are exactly zero at the masked entries. With
    ``mask_level="items"`` the comparison is per list (see the module docstring).
    """
    if case.mask_level == "items":
        _check_item_mask_equals_slice(case)
        return
    batch = (9,)
    args = _args(case, batch)
    mask = _mask(batch, 0)
    sliced = tuple(a[mask] if _is_batched(a, batch) else a for a in args)
    for reduce_fn in (jnp.mean, jnp.sum):
        _close(
            case,
            case(*args, where=mask, reduce_fn=reduce_fn),
            case(*sliced, reduce_fn=reduce_fn),
            f"masked {reduce_fn.__name__} vs sliced",
        )
    per = np.asarray(case(*args, where=mask, reduce_fn=None))
    _close(case, per[mask], case(*sliced, reduce_fn=None), "per-example masked vs sliced")
    if np.any(per[~mask] != 0):
        raise _fail(case, f"masked per-example losses must be exactly 0, got {per[~mask]}")

    poison = np.where(np.arange(mask.size).reshape(batch) % 2 == 0, np.nan, np.inf)
    poisoned = tuple(
        np.where(
            (~mask).reshape(batch + (1,) * (np.ndim(a) - len(batch))),
            poison.reshape(batch + (1,) * (np.ndim(a) - len(batch))).astype(np.asarray(a).dtype),
            a,
        )
        if _is_batched(a, batch) and _is_float(a)
        else a
        for a in args
    )
    _close(
        case,
        case(*poisoned, where=mask),
        case(*sliced),
        "loss with NaN/inf in masked entries vs sliced",
    )
    for i, g in zip(case.grad_argnums, _grad(case, poisoned, where=mask), strict=True):
        g = np.asarray(g)
        if not np.all(np.isfinite(g)):
            raise _fail(case, f"gradient of argument {i} not finite with NaN/inf in masked entries")
        if _is_batched(args[i], batch) and np.any(g[~mask] != 0):
            raise _fail(case, f"gradient of argument {i} nonzero at masked entries: {g[~mask]}")


def check_jit(case: ObjectiveCase) -> None:
    """``jax.jit`` gives the same values and gradients as eager execution."""
    args = _args(case, (7,), seed=1)
    mask = _where(case, args, (7,), 1)
    for options in ({}, {"where": mask}, {"reduce_fn": None}):
        jitted = jax.jit(lambda *a, o=options: case(*a, **o))
        _close(case, jitted(*args), case(*args, **options), f"jit vs eager with {options}")
    eager = _grad(case, args, where=mask)
    jitted = jax.jit(lambda *a: _grad(case, a, where=mask))(*args)
    for i, ge, gj in zip(case.grad_argnums, eager, jitted, strict=True):
        _close(case, gj, ge, f"jit vs eager gradient of argument {i}")


def check_batch_axes(case: ObjectiveCase) -> None:
    """Works under ``vmap`` and with extra leading batch axes, agreeing with flat calls."""
    shape = (3, 4)
    args = _args(case, shape, seed=2)
    mask = _where(case, args, shape, 2)
    flat = tuple(
        np.reshape(a, (12, *np.shape(a)[2:])) if _is_batched(a, shape) else a for a in args
    )
    flat_mask = mask.reshape((12, *mask.shape[2:]))
    per_flat = np.asarray(case(*flat, where=flat_mask, reduce_fn=None))
    _close(
        case,
        case(*args, where=mask, reduce_fn=None),
        per_flat.reshape(shape),
        "per-example losses with leading axes [3, 4] vs flattened [12]",
    )
    _close(
        case,
        case(*args, where=mask),
        case(*flat, where=flat_mask),
        "mean with leading axes vs flattened",
    )
    in_axes = tuple(0 if _is_batched(a, shape) else None for a in args)
    vmapped = jax.vmap(lambda m, *a: case(*a, where=m), in_axes=(0, *in_axes))(mask, *args)
    rows = [
        case(*(a[r] if ax == 0 else a for a, ax in zip(args, in_axes, strict=True)), where=mask[r])
        for r in range(shape[0])
    ]
    _close(case, vmapped, np.stack(rows), "vmap over rows vs a loop over rows")


@contextlib.contextmanager
def _float64() -> Iterator[None]:
    enable = getattr(jax, "enable_x64", None)
    if enable is None:  # older jax
        from jax.experimental import enable_x64 as enable  # type: ignore[no-redef]
    with enable(True):
        yield


def check_gradients(case: ObjectiveCase) -> None:
    """Analytic gradients match finite differences (``jax.test_util.check_grads``, float64)."""
    from jax.test_util import check_grads

    with _float64():
        args = tuple(
            np.asarray(a, np.float64) if _is_float(a) else a for a in _args(case, (5,), seed=3)
        )
        mask = _where(case, args, (5,), 3)

        def loss(*diff):
            full = list(args)
            for i, d in zip(case.grad_argnums, diff, strict=True):
                full[i] = d
            return case(*full, where=mask)

        check_grads(
            loss,
            tuple(args[i] for i in case.grad_argnums),
            order=1,
            modes=("rev",),
            eps=1e-6,
            atol=1e-5,
            rtol=1e-5,
        )


def check_extremes(case: ObjectiveCase) -> None:
    """Values and gradients are finite for inputs of magnitude 1e4."""
    for seed in range(3):
        args = _args(case, (16,), seed=10 + seed, scale=1e4)
        for reduce_fn in (jnp.mean, None):
            value = np.asarray(case(*args, reduce_fn=reduce_fn))
            if not np.all(np.isfinite(value)):
                raise _fail(case, f"non-finite loss at |inputs| = 1e4: {value}")
        for i, g in zip(case.grad_argnums, _grad(case, args), strict=True):
            if not np.all(np.isfinite(np.asarray(g))):
                raise _fail(case, f"non-finite gradient of argument {i} at |inputs| = 1e4")


def check_fully_masked(case: ObjectiveCase) -> None:
    """An all-masked batch gives exactly 0 and zero (finite) gradients."""
    args = _args(case, (6,), seed=4)
    mask = np.zeros_like(_where(case, args, (6,), 4))
    for reduce_fn in (jnp.mean, jnp.sum, None):
        value = np.asarray(case(*args, where=mask, reduce_fn=reduce_fn))
        if not np.all(value == 0):
            raise _fail(case, f"fully masked loss must be 0, got {value}")
    for i, g in zip(case.grad_argnums, _grad(case, args, where=mask), strict=True):
        if not np.all(np.asarray(g) == 0):
            raise _fail(case, f"fully masked gradient of argument {i} must be 0, got {g}")


def check_bfloat16(case: ObjectiveCase) -> None:
    """bfloat16 inputs give a float32 loss equal to the float32 loss of the rounded inputs."""
    args = _args(case, (8,), seed=5)
    low = tuple(jnp.asarray(a, jnp.bfloat16) if _is_float(a) else a for a in args)
    rounded = tuple(jnp.asarray(a, jnp.float32) if _is_float(a) else a for a in low)
    value = case(*low)
    if value.dtype != jnp.float32:
        raise _fail(case, f"bfloat16 inputs must give a float32 loss, got {value.dtype}")
    _close(case, value, case(*rounded), "bfloat16 inputs vs their float32 values")
    for i, g in zip(case.grad_argnums, _grad(case, low), strict=True):
        if not np.all(np.isfinite(np.asarray(g, np.float32))):
            raise _fail(case, f"non-finite bfloat16 gradient of argument {i}")


def check_no_retrace(case: ObjectiveCase) -> None:
    """A jitted objective is traced once for repeated calls with the same shapes."""
    traces = []

    @jax.jit
    def loss(*args):
        traces.append(None)
        return case(*args)

    for seed in range(3):
        jax.block_until_ready(loss(*(jnp.asarray(a) for a in _args(case, (5,), seed=20 + seed))))
    if len(traces) != 1:
        raise _fail(case, f"traced {len(traces)} times for 3 calls with equal shapes")


#: Every property check, by name.
CHECKS: Mapping[str, Callable[[ObjectiveCase], None]] = {
    "mask_equals_slice": check_mask_equals_slice,
    "jit": check_jit,
    "batch_axes": check_batch_axes,
    "gradients": check_gradients,
    "extremes": check_extremes,
    "fully_masked": check_fully_masked,
    "bfloat16": check_bfloat16,
    "no_retrace": check_no_retrace,
}


def check_objective(case: ObjectiveCase, checks: Sequence[str] | None = None) -> None:
    """Runs the named checks (all of :data:`CHECKS` by default) on ``case``."""
    for name in CHECKS if checks is None else checks:
        CHECKS[name](case)
