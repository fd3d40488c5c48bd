"""Meshes, batch shardings, distributed start-up and global batch assembly on 8 CPU devices."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

from jaxpref.train import mesh as mesh_lib


def test_eight_devices():
    assert jax.device_count() == 8, "tests/conftest.py should force 8 CPU devices"


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((8, 1, 1), (8, 1, 1)),
        ((2, 4, 1), (2, 4, 1)),
        ((2, 2, 2), (2, 2, 2)),
        ((1, -1, 1), (1, 8, 1)),
        ((-1, 2, 2), (2, 2, 2)),
    ],
)
def test_make_mesh_shapes(shape, expected):
    mesh = mesh_lib.make_mesh(shape)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == expected
    assert mesh.devices.size == 8
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())
    assert mesh.axis_types == (AxisType.Auto,) * 3


def test_make_mesh_default_is_data_parallel():
    assert dict(mesh_lib.make_mesh().shape) == {"data": 8, "fsdp": 1, "tensor": 1}


def test_make_mesh_on_a_divisor_uses_the_first_devices():
    mesh = mesh_lib.make_mesh((2, 2, 1))
    assert mesh.devices.size == 4
    assert {d.id for d in mesh.devices.flat} == {d.id for d in jax.devices()[:4]}


def test_make_mesh_explicit_devices_and_axis_types():
    devices = jax.devices()[4:]
    mesh = mesh_lib.make_mesh((1, -1, 1), devices=devices, axis_types=(AxisType.Explicit,) * 3)
    assert {d.id for d in mesh.devices.flat} == {d.id for d in devices}
    assert mesh.axis_types == (AxisType.Explicit,) * 3


@pytest.mark.parametrize(
    "shape, fragment",
    [
        ((3, 1, 1), "the mesh needs 3 devices"),
        ((16, 1, 1), "the mesh needs 16 devices"),
        ((-1, 3, 1), "8 is not a multiple of 3"),
        ((-1, -1, 1), "at most one -1"),
        ((0, 8, 1), "at most one -1"),
        ((8, 1), "three integer sizes"),
    ],
)
def test_make_mesh_bad_shape_names_shape_and_device_count(shape, fragment):
    with pytest.raises(ValueError, match="with 8 devices") as info:
        mesh_lib.make_mesh(shape)
    assert str(tuple(shape)) in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("ndim", [1, 2, 4])
def test_batch_sharding(ndim):
    mesh = mesh_lib.make_mesh((2, 2, 2))
    sharding = mesh_lib.batch_sharding(mesh, ndim)
    assert sharding.mesh is mesh
    assert sharding.spec == PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1)))


def test_batch_sharding_needs_a_batch_axis():
    with pytest.raises(ValueError, match="leading batch axis"):
        mesh_lib.batch_sharding(mesh_lib.make_mesh(), 0)


def test_global_batch_from_process_local():
    mesh = mesh_lib.make_mesh((2, 2, 2))
    rng = np.random.default_rng(0)
    local = {
        "tokens": rng.integers(0, 100, size=(8, 2, 5)).astype(np.int32),
        "mask": rng.random((8, 2, 5)) > 0.5,
        "nested": {"weight": rng.random(8).astype(np.float32)},
    }
    batch = mesh_lib.global_batch_from_process_local(local, mesh)
    for got, want in zip(jax.tree.leaves(batch), jax.tree.leaves(local), strict=True):
        assert isinstance(got, jax.Array)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert got.sharding.spec == PartitionSpec(("data", "fsdp"), *([None] * (want.ndim - 1)))
        np.testing.assert_array_equal(np.asarray(got), want)
        # Rows split over data x fsdp (4 slices of 2 rows), replicated over tensor (2 copies).
        rows = sorted(
            (shard.index[0].start, shard.index[0].stop) for shard in got.addressable_shards
        )
        assert rows == [(0, 2), (0, 2), (2, 4), (2, 4), (4, 6), (4, 6), (6, 8), (6, 8)]


def test_global_batch_rejects_uneven_rows_and_scalars():
    mesh = mesh_lib.make_mesh((2, 4, 1))
    with pytest.raises(ValueError, match=r"\['x'\] has 6 local rows.*8 batch shards"):
        mesh_lib.global_batch_from_process_local({"x": np.zeros((6, 3))}, mesh)
    with pytest.raises(ValueError, match="scalar"):
        mesh_lib.global_batch_from_process_local({"x": np.float32(1.0)}, mesh)


def test_maybe_initialize_distributed_single_process_does_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert mesh_lib.maybe_initialize_distributed(env={}) is False
    assert (
        mesh_lib.maybe_initialize_distributed(
            env={
                "SLURM_JOB_ID": "1",
                "SLURM_STEP_NODELIST": "n1",
                "SLURM_NTASKS": "1",
                "SLURM_PROCID": "0",
            }
        )
        is False
    )
    assert mesh_lib.maybe_initialize_distributed(env={"TPU_WORKER_HOSTNAMES": "h0"}) is False
    assert calls == []


@pytest.mark.parametrize(
    "env, expected",
    [
        (
            {
                "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
                "JAX_NUM_PROCESSES": "4",
                "JAX_PROCESS_ID": "2",
            },
            {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 2},
        ),
        (
            {
                "SLURM_JOB_ID": "7",
                "SLURM_STEP_NODELIST": "n[1-2]",
                "SLURM_NTASKS": "2",
                "SLURM_PROCID": "1",
            },
            {},
        ),
        ({"OMPI_MCA_orte_hnp_uri": "123.0;tcp://10.0.0.1:5000"}, {}),
        ({"TPU_WORKER_HOSTNAMES": "h0,h1"}, {}),
    ],
)
def test_maybe_initialize_distributed_detects_launchers(monkeypatch, env, expected):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    assert mesh_lib.maybe_initialize_distributed(env=env) is True
    assert calls == [expected]


def test_maybe_initialize_distributed_needs_count_and_id(monkeypatch):
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: None)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES, JAX_PROCESS_ID"):
        mesh_lib.maybe_initialize_distributed(env={"JAX_COORDINATOR_ADDRESS": "h:1"})
