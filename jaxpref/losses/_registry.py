"""Name -> objective registry, with the little metadata a training engine needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

#: The objective families the engine knows how to feed.
FAMILIES = ("pairwise", "reward", "unpaired", "listwise", "group", "game")


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """What a training engine needs to know to call a registered objective.

    Attributes:
      name: registry name.
      fn: the objective function.
      family: one of :data:`FAMILIES`.
      needs_reference: whether the objective takes reference log-probs.
      average_logps: whether its log-prob inputs are length-averaged (else summed).
    """

    name: str
    fn: Callable[..., Any]
    family: str
    needs_reference: bool = True
    average_logps: bool = False


_REGISTRY: dict[str, ObjectiveSpec] = {}


def register(
    name: str,
    fn: Callable[..., Any],
    *,
    family: str,
    needs_reference: bool = True,
    average_logps: bool = False,
    overwrite: bool = False,
) -> Callable[..., Any]:
    """Registers ``fn`` under ``name`` and returns it (usable from a notebook).

    Raises:
      ValueError: for an unknown family, or a taken name unless ``overwrite=True``.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown objective family {family!r}; known families: {FAMILIES}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"objective {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = ObjectiveSpec(name, fn, family, needs_reference, average_logps)
    return fn


def spec(name: str) -> ObjectiveSpec:
    """Returns the :class:`ObjectiveSpec` registered under ``name``.

    Raises:
      KeyError: naming the unknown objective and listing the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(available())
        raise KeyError(f"unknown objective {name!r}; known objectives: {known}") from None


def get(name: str) -> Callable[..., Any]:
    """Returns the objective function registered under ``name`` (see :func:`spec`)."""
    return spec(name).fn


def available(family: str | None = None) -> tuple[str, ...]:
    """Sorted names of the registered objectives, optionally of one family."""
    return tuple(sorted(n for n, s in _REGISTRY.items() if family in (None, s.family)))
