"""Sweep mode: train several copies of a small model at once, in one compiled program.

A sweep is a list of members, each an :class:`~jaxpref.train.objectives.Objective` (a name
and its options), e.g. DPO at ``beta = 0.05, 0.1, 0.5``, or DPO and IPO side by side. Their
train states are stacked on a leading member axis ``[M, ...]`` (parameters, optimizer state,
step, rng); the frozen reference is shared by default (one copy, not ``M``). Every member
sees the same batch.

How members are compiled: members are grouped into *blocks* of the same objective name and
the same non-numeric options. Within a block, ONE update step (any step factory, by default
:func:`~jaxpref.train.step.make_train_step`) is ``jax.vmap``-ped over the members, with the
numeric options that differ between them (``beta``...) passed as traced ``[M_k]`` arrays and
the options they share kept as Python values. Blocks run side by side in the same program
and the results are put back in member order. This costs nothing for members that do not
run (no ``lax.switch`` evaluating every branch under ``vmap``) and lets blocks return
different metrics (missing ones are NaN).

Traced options skip the objectives' static range checks (``check_static_range`` lets tracers
through), and an option used as a Python value (a shape, a flag, a string) cannot be traced:
name it in ``static_options`` to put members that differ in it into separate blocks.

>>> from jaxpref.train.objectives import Objective
>>> [o.options["beta"] for o in sweep_objectives(Objective("dpo"), beta=(0.05, 0.5))]
[0.05, 0.5]
"""

from __future__ import annotations

import dataclasses
import itertools
import numbers
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpref.train.objectives import Objective
from jaxpref.train.step import ModelDef, TrainState, init_state, make_train_step

Array = jax.Array
Batch = Mapping[str, Array]
StepFactory = Callable[..., Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]]


def sweep_objectives(objective: Objective, **values: Sequence[Any]) -> list[Objective]:
    """Members for every combination of option values (the last option varies fastest).

    ``sweep_objectives(Objective("dpo"), beta=(0.05, 0.1))`` is
    ``[Objective("dpo", {"beta": 0.05}), Objective("dpo", {"beta": 0.1})]``.
    """
    names = list(values)
    return [
        dataclasses.replace(
            objective, options={**objective.options, **dict(zip(names, combo, strict=True))}
        )
        for combo in itertools.product(*(values[n] for n in names))
    ]


def member_labels(objectives: Sequence[Objective]) -> list[str]:
    """Short unique labels, e.g. ``"dpo,beta=0.05"``, for logging each member."""
    labels = []
    for obj in objectives:
        opts = ",".join(f"{k}={v}" for k, v in sorted(obj.options.items()))
        labels.append(f"{obj.name},{opts}" if opts else obj.name)
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            labels[i] = f"{label}#{seen[label]}"
    return labels


def member_metrics(metrics: Mapping[str, Array], labels: Sequence[str]) -> dict[str, Array]:
    """Flattens ``[M]`` metrics into scalars ``"{label}/{name}"`` for a metric logger."""
    return {f"{label}/{k}": v[i] for k, v in metrics.items() for i, label in enumerate(labels)}


# --------------------------------------------------------------------------- states


def _state_axes(shared_reference: bool) -> TrainState:
    return TrainState(0, 0, 0, 0, None if shared_reference else 0)


def _map_members(fn: Callable[..., Any], state: Any, shared_reference: bool, *rest: Any) -> Any:
    """Applies ``fn`` to the stacked leaves of states (the shared reference passes through)."""
    fields = []
    for axis, *xs in zip(_state_axes(shared_reference), state, *rest, strict=True):
        fields.append(xs[0] if axis is None else jax.tree.map(fn, *xs))
    return TrainState(*fields)


def stack_states(states: Sequence[TrainState], *, shared_reference: bool = True) -> TrainState:
    """Stacks member states on a leading axis.

    With ``shared_reference`` every state must hold the same reference object (as
    :func:`init_sweep_state` makes them), kept as one unstacked copy.
    """
    if not states:
        raise ValueError("a sweep needs at least one member")
    stack = lambda *xs: jnp.stack(xs)
    reference = states[0].reference
    if shared_reference:
        first = jax.tree.leaves(reference)
        for s in states[1:]:
            leaves = jax.tree.leaves(s.reference)
            if len(leaves) != len(first) or any(
                a is not b for a, b in zip(leaves, first, strict=True)
            ):
                raise ValueError(
                    "shared_reference=True needs the same reference object in every state; "
                    "pass shared_reference=False to stack per-member references"
                )
    else:
        reference = jax.tree.map(stack, *(s.reference for s in states))
    fields = [jax.tree.map(stack, *xs) for xs in zip(*(s[:4] for s in states), strict=True)]
    return TrainState(*fields, reference)


def unstack_state(state: TrainState, index: int, *, shared_reference: bool = True) -> TrainState:
    """Member ``index`` of a stacked state, as a plain :class:`TrainState`."""
    return _map_members(lambda x: x[index], state, shared_reference)


def init_sweep_state(
    params: Any,
    optimizer: optax.GradientTransformation,
    num_members: int,
    *,
    seeds: Sequence[int] | None = None,
    reference: Any = None,
) -> TrainState:
    """``num_members`` copies of ``init_state(params, optimizer, seed=s, reference=...)``.

    The reference is shared. ``seeds`` default to 0 for every member: common random numbers,
    so on-policy members differ only through their options.
    """
    seeds = (0,) * num_members if seeds is None else tuple(seeds)
    if len(seeds) != num_members:
        raise ValueError(f"got {len(seeds)} seeds for {num_members} members")
    states = [init_state(params, optimizer, seed=s, reference=reference) for s in seeds]
    return stack_states(states, shared_reference=True)


# --------------------------------------------------------------------------- blocks


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class _Block:
    name: str
    members: tuple[int, ...]
    static: Mapping[str, Any]
    traced: Mapping[str, np.ndarray]  # option -> [M_k] values


def _blocks(objectives: Sequence[Objective], static_options: Collection[str]) -> list[_Block]:
    groups: dict[Any, list[int]] = {}
    for i, obj in enumerate(objectives):
        fixed = tuple(
            (k, repr(v))
            for k, v in sorted(obj.options.items())
            if k in static_options or not _is_number(v)
        )
        groups.setdefault((obj.name, tuple(sorted(obj.options)), fixed), []).append(i)
    blocks = []
    for (name, keys, _), members in groups.items():
        static, traced = {}, {}
        for k in keys:
            vals = [objectives[i].options[k] for i in members]
            if all(v is vals[0] or v == vals[0] for v in vals):
                static[k] = vals[0]
            else:
                traced[k] = np.asarray(vals)
        blocks.append(_Block(name, tuple(members), static, traced))
    return blocks


def make_sweep_step(
    model_def: ModelDef,
    objectives: Sequence[Objective],
    optimizer: optax.GradientTransformation,
    *,
    static_options: Collection[str] = (),
    shared_reference: bool = True,
    step_factory: StepFactory = make_train_step,
    **step_kwargs: Any,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]:
    """Builds one pure step that updates every member of a sweep.

    Args:
      model_def: from :func:`jaxpref.train.step.split_model` (all members share it).
      objectives: one per member (see :func:`sweep_objectives`).
      optimizer: shared by all members (each has its own state).
      static_options: options never traced: members differing in them go to separate blocks.
      shared_reference: the state holds one reference for all members (else ``[M, ...]``).
      step_factory: ``factory(model_def, objective, optimizer, **step_kwargs)`` returning a
        pure ``(state, batch) -> (state, metrics)``: :func:`make_train_step` (default) or
        :func:`jaxpref.train.onpolicy.make_onpolicy_step` (with its keyword arguments).
      **step_kwargs: passed to ``step_factory``.

    Returns:
      ``step(stacked_state, batch) -> (stacked_state, metrics)`` with every metric ``[M]``;
      jit it once (e.g. :func:`jaxpref.train.sharded.jit_step`).

    Raises:
      ValueError: for an empty sweep; the factory's errors for invalid members (at build).
    """
    objectives = list(objectives)
    if not objectives:
        raise ValueError("a sweep needs at least one member")
    blocks = _blocks(objectives, set(static_options))
    # Validate each member now (the factories validate again when traced).
    for obj in objectives:
        step_factory(model_def, obj, optimizer, **step_kwargs)
    order = np.concatenate([np.asarray(b.members) for b in blocks])
    inverse = np.argsort(order)
    identity = bool(np.all(order == np.arange(len(objectives))))
    axes, shared = _state_axes(shared_reference), shared_reference

    def run_block(block: _Block, state: TrainState, batch: Batch):
        def member(member_state, values):
            obj = Objective(block.name, {**block.static, **values})
            return step_factory(model_def, obj, optimizer, **step_kwargs)(member_state, batch)

        traced = {k: jnp.asarray(v) for k, v in block.traced.items()}
        return jax.vmap(member, in_axes=(axes, 0), out_axes=(axes, 0))(state, traced)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
        if len(blocks) == 1 and identity:
            return run_block(blocks[0], state, batch)
        outs = [
            run_block(
                b, _map_members(lambda x, b=b: x[np.asarray(b.members)], state, shared), batch
            )
            for b in blocks
        ]
        states, metrics = zip(*outs, strict=True)
        concat = lambda *xs: jnp.concatenate(xs)[inverse]
        new_state = _map_members(concat, states[0], shared, *states[1:])
        keys = sorted(set().union(*metrics))
        merged = {}
        for k in keys:
            parts = [
                m[k] if k in m else jnp.full(len(b.members), jnp.nan)
                for m, b in zip(metrics, blocks, strict=True)
            ]
            if any(k not in m for m in metrics):
                parts = [p.astype(jnp.float32) for p in parts]
            merged[k] = jnp.concatenate(parts)[inverse]
        return new_state, merged

    return step
