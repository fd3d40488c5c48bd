"""Device meshes, batch shardings and multi-host start-up.

Every run uses one mesh with the axes ``("data", "fsdp", "tensor")``. The batch is split over
``data`` and ``fsdp`` together (``fsdp`` shards parameters *and* the batch, ZeRO-3 style);
``tensor`` splits within a layer and never the batch. A mesh of shape ``(n, 1, 1)`` is plain
data parallelism, ``(1, n, 1)`` is FSDP.

Multi-host runs call :func:`maybe_initialize_distributed` first thing in ``main`` (before any
other JAX call), then build the mesh, and feed each step with
:func:`global_batch_from_process_local`, which turns the rows this process loaded into one
global :class:`jax.Array`. Nothing here runs at import time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "BATCH_AXES",
    "MESH_AXES",
    "batch_sharding",
    "global_batch_from_process_local",
    "make_mesh",
    "maybe_initialize_distributed",
]

#: The mesh axis names, in order.
MESH_AXES = ("data", "fsdp", "tensor")
#: The mesh axes the leading (batch) axis of every batch array is split over.
BATCH_AXES = ("data", "fsdp")


def make_mesh(
    shape: Sequence[int] = (-1, 1, 1),
    *,
    devices: Sequence[jax.Device] | None = None,
    axis_types: Sequence[AxisType] | None = None,
) -> Mesh:
    """A mesh with axes ``("data", "fsdp", "tensor")``.

    One size may be ``-1``: it takes all the devices the other sizes leave. When the product
    of the sizes is a proper divisor of the device count, the first ``prod(shape)`` devices
    are used (single-process runs only: a multi-process mesh must span every process).
    Devices are laid out by :func:`jax.make_mesh`, which follows the physical topology.

    Args:
      shape: ``(data, fsdp, tensor)`` sizes.
      devices: the devices to use (default: ``jax.devices()``, all processes).
      axis_types: one :class:`jax.sharding.AxisType` per axis. Default ``Auto`` on every
        axis (GSPMD propagation from the input/output shardings; what the model's logical
        sharding rules expect). Note that :func:`jax.make_mesh` itself now defaults to
        ``Explicit``.

    Returns:
      A :class:`jax.sharding.Mesh`.

    Raises:
      ValueError: if the shape is malformed or does not fit the device count; the message
        names the shape and the device count.

    Example:
      >>> mesh = make_mesh((1, -1, 1), devices=jax.devices()[:1])
      >>> dict(mesh.shape)
      {'data': 1, 'fsdp': 1, 'tensor': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    resolved = _resolve_shape(shape, n)
    size = math.prod(resolved)
    if size != n and jax.process_count() > 1:
        raise ValueError(
            f"Mesh shape {tuple(shape)} (data, fsdp, tensor) uses {size} of {n} devices; a "
            f"multi-process mesh must use all of them ({jax.process_count()} processes)."
        )
    if axis_types is None:
        axis_types = (AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(resolved, MESH_AXES, tuple(axis_types), devices=devices[:size])


def _resolve_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Checks ``shape`` and fills in its ``-1`` entry."""
    shape = tuple(shape)
    where = f"Mesh shape {shape} (data, fsdp, tensor) with {num_devices} devices"
    if len(shape) != len(MESH_AXES) or not all(isinstance(s, int) for s in shape):
        raise ValueError(f"{where}: need three integer sizes, one per axis {MESH_AXES}.")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"{where}: sizes must be positive, with at most one -1.")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"{where}: {num_devices} is not a multiple of {known}.")
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    size = math.prod(shape)
    if num_devices % size:
        raise ValueError(
            f"{where}: the mesh needs {size} devices, which must equal or divide the device count."
        )
    return shape


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """The sharding of a batch array: leading axis over ``("data", "fsdp")``, rest replicated.

    Args:
      mesh: a mesh from :func:`make_mesh`.
      ndim: the rank of the array (at least 1).

    Returns:
      A :class:`jax.sharding.NamedSharding`.

    Example:
      >>> mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
      >>> batch_sharding(mesh, 3).spec
      P(('data', 'fsdp'), None, None)
    """
    if ndim < 1:
        raise ValueError(f"A batch array needs a leading batch axis; got ndim={ndim}.")
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


# Environment variables that mean "this process is one of several". JAX_COORDINATOR_ADDRESS
# is read by jax.distributed.initialize itself; the process count and id are ours.
_EXPLICIT_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
# The variables jax's own SLURM detection requires.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID")


def _detected_cluster(env: Mapping[str, str]) -> str | None:
    """The multi-process launcher ``env`` comes from, or None for a single process."""
    if "JAX_COORDINATOR_ADDRESS" in env:
        return "explicit"
    if all(v in env for v in _SLURM_VARS) and int(env["SLURM_NTASKS"]) > 1:
        return "slurm"
    if "OMPI_MCA_orte_hnp_uri" in env:
        return "ompi"
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES") or ""
    if len([h for h in hosts.split(",") if h]) > 1 or "MEGASCALE_COORDINATOR_ADDRESS" in env:
        return "tpu"
    return None


def maybe_initialize_distributed(*, env: Mapping[str, str] | None = None) -> bool:
    """Calls :func:`jax.distributed.initialize` when launched as one of several processes.

    Call it at the top of ``main``, before anything else touches JAX (``jax.devices()``
    included); JAX refuses to initialise afterwards. A single-process run is left alone.

    Detected launches:

    * explicit: ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) together with
      ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``;
    * SLURM with more than one task (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``,
      ``SLURM_NTASKS`` > 1, ``SLURM_PROCID``), Open MPI (``OMPI_MCA_orte_hnp_uri``), and
      multi-host Cloud TPU (``TPU_PROCESS_ADDRESSES`` / ``TPU_WORKER_HOSTNAMES`` listing more
      than one host, or ``MEGASCALE_COORDINATOR_ADDRESS``): JAX's own cluster detection
      fills in every argument.

    Args:
      env: the environment to inspect (default ``os.environ``).

    Returns:
      True if this call initialised the distributed runtime; False if the run is
      single-process or the runtime was already initialised.

    Raises:
      ValueError: if ``JAX_COORDINATOR_ADDRESS`` is set without the process count and id.
    """
    env = os.environ if env is None else env
    cluster = _detected_cluster(env)
    if cluster is None or jax.distributed.is_initialized():
        return False
    if cluster == "explicit":
        missing = [v for v in _EXPLICIT_VARS if v not in env]
        if missing:
            raise ValueError(
                f"JAX_COORDINATOR_ADDRESS is set but {', '.join(missing)} is not; set all of "
                f"{', '.join(_EXPLICIT_VARS)}."
            )
        jax.distributed.initialize(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    else:
        jax.distributed.initialize()
    return True


def _local_batch_shards(mesh: Mesh) -> int:
    """How many distinct batch slices this process's devices hold."""
    axes = [mesh.axis_names.index(a) for a in BATCH_AXES]
    me = jax.process_index()
    slices = {
        tuple(index[a] for a in axes)
        for index in np.ndindex(mesh.devices.shape)
        if mesh.devices[index].process_index == me
    }
    return len(slices)


def global_batch_from_process_local(local_batch: Any, mesh: Mesh) -> Any:
    """Assembles the rows each process loaded into global arrays sharded by batch.

    Each process passes the rows it loaded (its slice of the global batch, the same number
    of rows on every process); the result holds global :class:`jax.Array` s whose leading
    axis is split over ``("data", "fsdp")`` (:func:`batch_sharding`). On one process the
    local batch is the global batch.

    Args:
      local_batch: a pytree (usually ``dict[str, np.ndarray]``) of arrays with a leading
        batch axis.
      mesh: a mesh from :func:`make_mesh`.

    Returns:
      The same pytree of global :class:`jax.Array` s.

    Raises:
      ValueError: if an array has no batch axis, or its rows do not split evenly over this
        process's batch shards.

    Example:
      >>> mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
      >>> batch = global_batch_from_process_local({"x": np.zeros((4, 3))}, mesh)
      >>> batch["x"].shape
      (4, 3)
    """
    shards = _local_batch_shards(mesh)

    def one(path: Any, x: Any) -> jax.Array:
        x = np.asarray(x)
        name = jax.tree_util.keystr(path)
        if x.ndim == 0:
            raise ValueError(f"Batch array {name} is a scalar; it needs a leading batch axis.")
        if x.shape[0] % shards:
            raise ValueError(
                f"Batch array {name} has {x.shape[0]} local rows, which do not split over "
                f"this process's {shards} batch shards (mesh {dict(mesh.shape)})."
            )
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)

    return jax.tree_util.tree_map_with_path(one, local_batch)
