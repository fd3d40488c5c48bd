"""params_sha256: determinism, sensitivity to every bit, and invariance to sharding."""

from __future__ import annotations

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxpref.train import make_mesh, params_sha256


def _params():
    rng = np.random.default_rng(0)
    return {
        "dense": {
            "w": rng.standard_normal((16, 8)).astype(np.float32),
            "b": np.zeros(8, np.float32),
        },
        "embed": rng.standard_normal((32, 16)).astype(np.float32),
        "step": np.int32(7),
    }


def test_matches_an_independent_rederivation():
    params = {"b": np.arange(3, dtype=np.int32), "a": np.ones((2,), np.float32)}

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(8, "little") + data

    stream = field((2).to_bytes(8, "little"))
    for name in ("['a']", "['b']"):
        leaf = params[name[2]]
        stream += field(name.encode()) + field(str(leaf.dtype).encode())
        stream += field(repr(leaf.shape).encode()) + field(leaf.tobytes())
    assert params_sha256(params) == hashlib.sha256(stream).hexdigest()


def test_deterministic_and_independent_of_insertion_order():
    params = _params()
    reordered = {"step": params["step"], "embed": params["embed"], "dense": params["dense"]}
    assert params_sha256(params) == params_sha256(params)
    assert params_sha256(params) == params_sha256(reordered)
    assert params_sha256(params) == params_sha256(jax.tree.map(jnp.asarray, params))


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_equals_unsharded(shape):
    params = _params()
    mesh = make_mesh(shape)
    specs = {
        "dense": {"w": PartitionSpec("fsdp", "tensor"), "b": PartitionSpec()},
        "embed": PartitionSpec(("data", "fsdp"), "tensor"),
        "step": PartitionSpec(),
    }
    sharded = jax.tree.map(
        lambda x, s: jax.device_put(x, NamedSharding(mesh, s)),
        jax.tree.map(jnp.asarray, params),
        specs,
    )
    assert not sharded["embed"].sharding.is_fully_replicated
    assert params_sha256(sharded) == params_sha256(params)


def test_every_bit_matters():
    params = _params()
    base = params_sha256(params)
    flipped = {**params, "embed": params["embed"].copy()}
    flipped["embed"].view(np.uint32)[5, 3] ^= 1  # the lowest mantissa bit of one element
    assert params_sha256(flipped) != base
    # -0.0 and 0.0 compare equal but are different bits.
    zeros = {**params, "dense": {**params["dense"], "b": -params["dense"]["b"]}}
    assert params_sha256(zeros) != base


def test_dtype_shape_and_path_matter():
    w = np.arange(6, dtype=np.float32)
    base = params_sha256({"w": w})
    assert params_sha256({"w": w.astype(np.int32)}) != base
    assert params_sha256({"w": w.reshape(2, 3)}) != base
    assert params_sha256({"v": w}) != base
    # Moving bytes between leaves changes the hash even though the concatenation is equal.
    assert params_sha256({"a": w[:2], "b": w[2:]}) != params_sha256({"a": w[:3], "b": w[3:]})


def test_typed_prng_keys():
    key = jax.random.key(1)
    assert params_sha256({"k": key}) == params_sha256({"k": jax.random.key(1)})
    assert params_sha256({"k": key}) != params_sha256({"k": jax.random.key(2)})
    # Same bits, different implementation name in the dtype.
    raw = jax.random.key_data(key)
    assert params_sha256({"k": key}) != params_sha256({"k": raw})
