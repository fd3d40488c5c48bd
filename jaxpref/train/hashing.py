"""A content hash of a pytree of arrays, to check that two runs ended bit-identical."""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["params_sha256"]


def _host_array(leaf: Any) -> np.ndarray:
    """The full value of ``leaf`` on this host (typed PRNG keys as their raw key data)."""
    if isinstance(leaf, jax.Array):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        if not leaf.is_fully_addressable:
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
    return np.ascontiguousarray(np.asarray(jax.device_get(leaf)))


def params_sha256(params: Any) -> str:
    """SHA-256 over every leaf of a pytree, independent of sharding and device placement.

    Leaves are visited in the order of their sorted key paths
    (:func:`jax.tree_util.keystr`); for each, the path, the dtype, the shape and the raw
    bytes of the gathered value are hashed, each length-prefixed so that no two different
    trees produce the same byte stream. The same values give the same hash whether the
    arrays are sharded over a mesh, on one device, or NumPy arrays of the same dtype; any
    changed bit, dtype, shape or key changes it. A typed PRNG key is hashed by its key
    data, with the key dtype (e.g. ``key<fry>``) standing for its implementation.

    Call it on every process of a multi-process run (arrays that are not fully addressable
    are gathered with :func:`jax.experimental.multihost_utils.process_allgather`).

    Args:
      params: any pytree of arrays or scalars.

    Returns:
      The hex digest (64 characters).

    Example:
      >>> a = params_sha256({"w": np.ones((2, 2), np.float32)})
      >>> a == params_sha256({"w": jax.numpy.ones((2, 2))})
      True
      >>> a == params_sha256({"w": np.ones((2, 2), np.float64)})
      False
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(params)
    keyed = sorted(
        ((jax.tree_util.keystr(path), leaf) for path, leaf in leaves), key=lambda kv: kv[0]
    )
    digest = hashlib.sha256()

    def put(data: bytes) -> None:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)

    put(len(keyed).to_bytes(8, "little"))
    for name, leaf in keyed:
        dtype = str(getattr(leaf, "dtype", None) or np.asarray(leaf).dtype)
        value = _host_array(leaf)
        if value.dtype.byteorder == ">":
            value = value.astype(value.dtype.newbyteorder("<"))
        put(name.encode())
        put(dtype.encode())
        put(repr(value.shape).encode())
        put(value.tobytes())
    return digest.hexdigest()
