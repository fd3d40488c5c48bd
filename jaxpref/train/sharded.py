"""Placing a train state on a mesh and compiling a step with fixed in/out shardings.

Parameters keep the shardings their logical axis rules gave them
(:func:`jaxpref.models.shard_model`); the optimizer state inherits them through GSPMD when it
is created with ``jax.jit(optimizer.init)``; scalars (step, RNG key) are replicated. The step
is compiled once with ``out_shardings`` equal to the state's own shardings, so every step
sees the same layout and nothing recompiles, and the state buffers are donated.

Log-probs from hidden states run under :func:`jax.shard_map` over the batch axes
(:func:`sharded_logps_fn`): the chunked custom-VJP scan then works on each device's own
tokens instead of GSPMD gathering the hidden states, and the unembedding gradient is summed
across devices once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxpref.logprobs import sequence_logps_from_hidden
from jaxpref.train.mesh import BATCH_AXES, batch_sharding

Array = jax.Array


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding on ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def place_state(state: Any, mesh: Mesh) -> Any:
    """Puts every leaf not already on ``mesh`` there, replicated (scalars, keys, counters)."""

    def place(x: Any) -> Any:
        if x is None:
            return x
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
            return x
        return jax.device_put(x, replicated(mesh))

    return jax.tree.map(place, state)


def state_shardings(state: Any) -> Any:
    """The sharding of every leaf of a placed state (a pytree of shardings)."""
    return jax.tree.map(lambda x: x.sharding, state)


def place_batch(batch: Mapping[str, Any], mesh: Mesh | None) -> dict[str, Array]:
    """Shards each batch array's leading axis over the mesh's batch axes (single process).

    For multi-host runs use :func:`jaxpref.train.mesh.global_batch_from_process_local`.
    """
    if mesh is None:
        return {k: jax.numpy.asarray(v) for k, v in batch.items()}
    return {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in batch.items()}


def sharded_logps_fn(mesh: Mesh) -> Callable[..., Array]:
    """``sequence_logps_from_hidden`` mapped over the batch axes of ``mesh``."""

    def fn(hidden, unembedding, targets, *, where=None, average=False):
        tokens = PartitionSpec(BATCH_AXES, None)
        body = functools.partial(sequence_logps_from_hidden, average=average)
        if where is None:
            mapped = jax.shard_map(
                lambda h, w, t: body(h, w, t),
                mesh=mesh,
                in_specs=(PartitionSpec(BATCH_AXES, None, None), PartitionSpec(), tokens),
                out_specs=PartitionSpec(BATCH_AXES),
            )
            return mapped(hidden, unembedding, targets)
        mapped = jax.shard_map(
            lambda h, w, t, m: body(h, w, t, where=m),
            mesh=mesh,
            in_specs=(PartitionSpec(BATCH_AXES, None, None), PartitionSpec(), tokens, tokens),
            out_specs=PartitionSpec(BATCH_AXES),
        )
        return mapped(hidden, unembedding, targets, where)

    return fn


def jit_step(
    step: Callable[[Any, Any], tuple[Any, Any]],
    state: Any,
    *,
    mesh: Mesh | None = None,
    donate: bool = True,
) -> Callable[[Any, Any], tuple[Any, Any]]:
    """Compiles ``step`` so the output state has exactly the input state's shardings.

    Args:
      step: a pure ``(state, batch) -> (state, metrics)``.
      state: the placed state (its shardings fix the layout).
      mesh: the mesh, or None for a single device.
      donate: donate the input state's buffers (the caller must not reuse them).

    Returns:
      The jitted step; batches must be placed with :func:`place_batch` (or assembled with
      ``global_batch_from_process_local``).
    """
    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    return jax.jit(
        step,
        out_shardings=(state_shardings(state), replicated(mesh)),
        donate_argnums=donate_argnums,
    )
