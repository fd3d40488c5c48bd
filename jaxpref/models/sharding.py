"""Logical axis names, the rules that map them to mesh axes, and parameter placement.

Every parameter carries logical axis names in its ``out_sharding`` metadata (see
:mod:`jaxpref.models.layers`):

==============  =================================================================
logical axis    used by
==============  =================================================================
``vocab``       embedding rows, ``lm_head`` columns
``embed``       the model dimension of every projection and of the embedding
``heads``       query heads (q kernel/bias, o kernel)
``kv_heads``    key/value heads (k, v kernels/biases)
``head_dim``    per-head features; also the q/k norm scales (Qwen3)
``mlp``         the SwiGLU hidden dimension
``norm``        RMSNorm scales of size ``d_model``
``batch``       activations only (the batch axis of inputs), for the training engine
``length``      activations only (the time axis)
==============  =================================================================

A :class:`ShardingRules` maps each logical name to a mesh axis, a tuple of mesh axes, or
None (replicated). Presets on the mesh axes ``("data", "fsdp", "tensor")``:

* :meth:`ShardingRules.data_parallel`: parameters replicated; batch over data and fsdp.
* :meth:`ShardingRules.fsdp`: ``embed`` over ``fsdp`` (ZeRO-3 style), batch as above.
* :meth:`ShardingRules.fsdp_tensor`: FSDP plus Megatron-style tensor parallelism: ``heads``,
  ``kv_heads``, ``mlp`` and ``vocab`` over ``tensor``.

Because size-1 mesh axes shard nothing, ``fsdp_tensor`` on a ``(n, 1, 1)`` mesh is data
parallel and on a ``(1, n, 1)`` mesh is FSDP; it is :func:`jaxpref.models.from_pretrained`'s
default. Meshes must use :attr:`jax.sharding.AxisType.Auto` axes (GSPMD propagation; the
model has no explicit activation shardings); :func:`make_mesh` builds one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "LOGICAL_AXES",
    "MESH_AXES",
    "ShardingRules",
    "create_sharded",
    "logical_axes",
    "make_mesh",
    "named_shardings",
    "partition_specs",
    "shard_model",
]

#: The mesh axis names the presets and :func:`make_mesh` use.
MESH_AXES = ("data", "fsdp", "tensor")

#: Every logical axis name used by jaxpref.models (parameters and activations).
LOGICAL_AXES = ("vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "norm", "batch", "length")

MeshAxes = str | tuple[str, ...] | None
M = TypeVar("M", bound=nnx.Module)


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """A mapping from logical axis names to mesh axes (hashable, immutable).

    Attributes:
      rules: ``((logical_name, mesh_axes), ...)``; ``mesh_axes`` is a mesh axis name, a
        tuple of names, or None for replicated. Logical names not listed are replicated.

    Example:
      >>> from jaxpref.models import ShardingRules
      >>> rules = ShardingRules.fsdp_tensor()
      >>> rules.spec(("embed", "heads", "head_dim"))
      P('fsdp', 'tensor', None)
      >>> rules.spec(("batch", "length"))
      P(('data', 'fsdp'), None)
      >>> rules.replace(vocab=None).spec(("vocab", "embed"))
      P(None, 'fsdp')
    """

    rules: tuple[tuple[str, MeshAxes], ...]

    def __post_init__(self):
        names = [name for name, _ in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"Logical axes mapped twice: {duplicates}.")
        object.__setattr__(
            self,
            "rules",
            tuple((n, tuple(a) if isinstance(a, list) else a) for n, a in self.rules),
        )

    @classmethod
    def data_parallel(cls) -> ShardingRules:
        """Replicated parameters; the batch split over ``data`` and ``fsdp``."""
        return cls((("batch", ("data", "fsdp")),))

    @classmethod
    def fsdp(cls) -> ShardingRules:
        """Fully sharded data parallel: every ``embed`` dimension split over ``fsdp``."""
        return cls((("batch", ("data", "fsdp")), ("embed", "fsdp")))

    @classmethod
    def fsdp_tensor(cls) -> ShardingRules:
        """FSDP over ``fsdp`` plus tensor parallelism over ``tensor``."""
        return cls(
            (
                ("batch", ("data", "fsdp")),
                ("embed", "fsdp"),
                ("vocab", "tensor"),
                ("heads", "tensor"),
                ("kv_heads", "tensor"),
                ("mlp", "tensor"),
            )
        )

    @property
    def mapping(self) -> dict[str, MeshAxes]:
        """The rules as a dict."""
        return dict(self.rules)

    @property
    def flax_rules(self) -> tuple[tuple[str, MeshAxes], ...]:
        """The rules for ``nnx.logical_axis_rules``, with every unmapped name in
        :data:`LOGICAL_AXES` mapped to None (flax keeps unmapped names as mesh axes)."""
        mapping = self.mapping
        return self.rules + tuple((n, None) for n in LOGICAL_AXES if n not in mapping)

    def replace(self, **mapping: MeshAxes) -> ShardingRules:
        """A copy with some logical names remapped (None replicates them)."""
        merged = {**self.mapping, **mapping}
        return ShardingRules(tuple(merged.items()))

    def spec(self, axes: Sequence[str | None]) -> PartitionSpec:
        """The :class:`~jax.sharding.PartitionSpec` of an array with these logical axes."""
        mapping = self.mapping
        return PartitionSpec(*(None if a is None else mapping.get(a) for a in axes))


def make_mesh(
    shape: Sequence[int] = (-1, 1, 1),
    *,
    axis_names: Sequence[str] = MESH_AXES,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """A mesh with ``Auto`` axes ``("data", "fsdp", "tensor")`` over the available devices.

    Args:
      shape: one size per axis; at most one may be ``-1`` (all remaining devices).
      axis_names: the mesh axis names.
      devices: devices to use (default: all of ``jax.devices()``).

    Returns:
      A :class:`jax.sharding.Mesh`.

    Example:
      >>> from jaxpref.models import make_mesh
      >>> mesh = make_mesh((1, -1, 1), devices=jax.devices()[:1])
      >>> dict(mesh.shape)
      {'data': 1, 'fsdp': 1, 'tensor': 1}
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"shape {tuple(shape)} must have one size per axis {tuple(axis_names)}.")
    if shape.count(-1) > 1:
        raise ValueError(f"At most one mesh axis size may be -1, got {tuple(shape)}.")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices do not divide into mesh shape {shape}.")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"Mesh shape {tuple(shape)} needs {math.prod(shape)} devices; {len(devices)} given."
        )
    return jax.make_mesh(
        tuple(shape),
        tuple(axis_names),
        axis_types=(AxisType.Auto,) * len(shape),
        devices=devices,
    )


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _state(tree: Any) -> Any:
    return nnx.state(tree) if isinstance(tree, nnx.Module) else tree


def _var_axes(var: nnx.Variable) -> tuple[str | None, ...]:
    axes = var.get_metadata().get("out_sharding")
    ndim = len(np.shape(var.get_value()))
    if not axes:
        return (None,) * ndim
    if len(axes) != ndim:
        raise ValueError(f"Logical axes {axes} do not match a rank-{ndim} variable.")
    return tuple(axes)


def logical_axes(tree: Any) -> Any:
    """The logical axis names of every variable of a module or state (same structure).

    Variables without annotations get ``(None,) * ndim``.
    """
    return jax.tree.map(lambda v: v.replace(_var_axes(v)), _state(tree), is_leaf=_is_variable)


def partition_specs(tree: Any, rules: ShardingRules) -> Any:
    """The :class:`~jax.sharding.PartitionSpec` of every variable under ``rules``.

    Returns the structure of ``nnx.state(tree)`` (Variables holding specs), usable as
    ``jax.jit`` ``out_shardings`` / with ``jax.lax.with_sharding_constraint``.
    """
    return jax.tree.map(
        lambda v: v.replace(rules.spec(_var_axes(v))), _state(tree), is_leaf=_is_variable
    )


def check_mesh(mesh: Mesh, rules: ShardingRules) -> None:
    """Raises if ``mesh`` has non-Auto axes or lacks a mesh axis the rules use."""
    if any(t != AxisType.Auto for t in mesh.axis_types):
        raise ValueError(
            f"jaxpref.models needs a mesh with AxisType.Auto axes, got {mesh.axis_types}; "
            "build one with jaxpref.models.make_mesh."
        )
    used = set()
    for _, axes in rules.rules:
        used.update((axes,) if isinstance(axes, str) else (axes or ()))
    missing = sorted(used - set(mesh.axis_names))
    if missing:
        raise ValueError(
            f"Sharding rules use mesh axes {missing} that the mesh {mesh.axis_names} lacks."
        )


def sharding_for(
    shape: Sequence[int], axes: Sequence[str | None], mesh: Mesh, rules: ShardingRules, name: str
) -> NamedSharding:
    """The NamedSharding of one array; raises if a sharded dimension does not divide."""
    spec = rules.spec(axes)
    for dim, logical, mesh_axes in zip(shape, axes, spec, strict=True):
        if mesh_axes is None:
            continue
        names = (mesh_axes,) if isinstance(mesh_axes, str) else mesh_axes
        size = math.prod(mesh.shape[n] for n in names)
        if dim % size:
            raise ValueError(
                f"{name}: dimension {logical!r} of size {dim} is not divisible by mesh axes "
                f"{names} of total size {size}; change the mesh or the rules "
                f"(e.g. rules.replace({logical}=None))."
            )
    return NamedSharding(mesh, spec)


def named_shardings(tree: Any, mesh: Mesh, rules: ShardingRules) -> Any:
    """The :class:`~jax.sharding.NamedSharding` of every variable (state structure)."""
    check_mesh(mesh, rules)

    def one(path, var):
        name = ".".join(str(getattr(p, "key", p)) for p in path)
        return var.replace(
            sharding_for(np.shape(var.get_value()), _var_axes(var), mesh, rules, name)
        )

    return jax.tree_util.tree_map_with_path(one, _state(tree), is_leaf=_is_variable)


def shard_model(model: M, mesh: Mesh, rules: ShardingRules) -> M:
    """Moves every variable of ``model`` to its sharding (in place) and returns the model."""
    shardings = named_shardings(model, mesh, rules)
    state = nnx.state(model)
    placed = jax.tree.map(
        lambda v, s: v.replace(jax.device_put(v.get_value(), s.get_value())),
        state,
        shardings,
        is_leaf=_is_variable,
    )
    nnx.update(model, placed)
    return model


def create_sharded(constructor: Callable[[], M], mesh: Mesh, rules: ShardingRules) -> M:
    """Builds ``constructor()`` with every variable created directly in its sharding.

    The constructor (e.g. ``lambda: Transformer(config, rngs=nnx.Rngs(0))``) runs under
    ``jax.jit`` with ``out_shardings``, so no device ever holds a full replicated copy.

    Example:
      >>> from flax import nnx
      >>> from jaxpref.models import ShardingRules, Transformer, TransformerConfig, make_mesh
      >>> mesh = make_mesh((1, -1, 1), devices=jax.devices()[:1])
      >>> model = create_sharded(
      ...     lambda: Transformer(TransformerConfig.tiny(), rngs=nnx.Rngs(0)),
      ...     mesh, ShardingRules.fsdp())
      >>> model.embed_tokens.embedding.get_value().sharding.spec
      P(None, 'fsdp')
    """
    abstract = nnx.eval_shape(constructor)
    graphdef, abstract_state = nnx.split(abstract)
    shardings = named_shardings(abstract_state, mesh, rules)
    out_shardings = jax.tree.map(lambda v: v.get_value(), shardings, is_leaf=_is_variable)

    def init():
        return jax.tree.map(lambda v: v.get_value(), nnx.state(constructor()), is_leaf=_is_variable)

    values = jax.jit(init, out_shardings=out_shardings)()
    state = jax.tree.map(lambda v, x: v.replace(x), abstract_state, values, is_leaf=_is_variable)
    return nnx.merge(graphdef, state)
