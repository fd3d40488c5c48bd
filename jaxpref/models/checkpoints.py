"""Hugging Face checkpoints: load safetensors (or GGUF) into a model; save safetensors.

Loading is split in two so every format shares one code path:

1. a *tensor source*, anything with ``names() -> set[str]``, ``shape(name)`` and
   ``get(name) -> np.ndarray`` under Hugging Face tensor names (a directory of safetensors
   files, single or index-sharded; or the dict :func:`jaxpref.models.gguf.read_gguf` returns);
2. :func:`load_from_source`, which builds the model abstractly (no allocation), checks the
   source's names and shapes against it, then reads, converts and places one tensor at a
   time. With a mesh each tensor goes straight to its ``NamedSharding`` with
   :func:`jax.make_array_from_callback`: a device receives only its shard, and host memory
   holds one tensor at a time.

Pickle-based checkpoints (``pytorch_model.bin``, ``*.pt``, ``*.pth``, ...) are refused, never
unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from jaxpref.models.config import TransformerConfig
from jaxpref.models.layers import Dense, Embed, RMSNorm
from jaxpref.models.sharding import ShardingRules, check_mesh, sharding_for
from jaxpref.models.transformer import Transformer

__all__ = [
    "CheckpointError",
    "TensorSource",
    "from_pretrained",
    "load_from_source",
    "save_pretrained",
    "tensor_names",
]

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_INDEX = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing/unexpected tensors, shapes, format."""


class TensorSource(Protocol):
    """Tensors under Hugging Face names (e.g. ``model.layers.0.self_attn.q_proj.weight``)."""

    def names(self) -> set[str]:
        """All tensor names."""
        ...

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of one tensor, without reading it."""
        ...

    def get(self, name: str) -> np.ndarray:
        """One tensor as a NumPy array (bfloat16 as ``ml_dtypes.bfloat16``)."""
        ...


class ArraySource:
    """A :class:`TensorSource` over an in-memory ``{name: array}`` dict."""

    def __init__(self, tensors: Mapping[str, Any]):
        self._tensors = dict(tensors)

    def names(self) -> set[str]:
        return set(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(np.shape(self._tensors[name]))

    def get(self, name: str) -> np.ndarray:
        return np.asarray(self._tensors[name])


class SafetensorsSource:
    """A :class:`TensorSource` over safetensors files, read lazily (memory-mapped)."""

    def __init__(self, files: Mapping[str, Path]):
        try:
            from safetensors import safe_open
        except ImportError as e:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "Reading safetensors needs the 'safetensors' package: pip install 'jaxpref[hf]'."
            ) from e
        self._open = lambda file: safe_open(os.fspath(file), framework="numpy")
        self._handles: dict[Path, Any] = {}
        self._file_of = dict(files)

    @classmethod
    def from_files(cls, files: list[Path]) -> SafetensorsSource:
        """Indexes the tensors of several files by reading their headers."""
        source = cls({})
        for file in files:
            for name in source._handle(file).keys():
                if name in source._file_of:
                    raise CheckpointError(
                        f"Tensor {name!r} appears in both {source._file_of[name].name} and "
                        f"{file.name}."
                    )
                source._file_of[name] = file
        return source

    def _handle(self, file: Path):
        if file not in self._handles:
            self._handles[file] = self._open(file)
        return self._handles[file]

    def names(self) -> set[str]:
        return set(self._file_of)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(self._file_of[name]).get_slice(name).get_shape())

    def get(self, name: str) -> np.ndarray:
        return self._handle(self._file_of[name]).get_tensor(name)


@dataclasses.dataclass(frozen=True)
class _Tensor:
    """One model parameter and the Hugging Face tensor it corresponds to."""

    path: tuple[Any, ...]
    name: str
    shape: tuple[int, ...]
    # None: stored as in Hugging Face; 0: a Dense bias (flattened in HF); k >= 1: a Dense
    # kernel [*in_shape, *out_shape] with k input axes (HF nn.Linear weight [out, in]).
    in_ndim: int | None

    @property
    def hf_shape(self) -> tuple[int, ...]:
        if self.in_ndim is None:
            return self.shape
        if self.in_ndim == 0:
            return (math.prod(self.shape),)
        return (math.prod(self.shape[self.in_ndim :]), math.prod(self.shape[: self.in_ndim]))

    def to_model(self, w: np.ndarray) -> np.ndarray:
        if self.in_ndim is None:
            return w
        return (w if self.in_ndim == 0 else w.T).reshape(self.shape)

    def to_hf(self, x: np.ndarray) -> np.ndarray:
        if self.in_ndim is None:
            return x
        if self.in_ndim == 0:
            return x.reshape(-1)
        return x.reshape(self.hf_shape[::-1]).T


def _tensors(model: nnx.Module) -> list[_Tensor]:
    """The parameter <-> Hugging Face tensor correspondence of a (possibly abstract) model."""
    out = []
    for path, node in nnx.iter_graph(model):
        if not path:
            continue
        prefix = ".".join(str(p) for p in path)
        prefix = prefix if path[0] == "lm_head" else f"model.{prefix}"
        if isinstance(node, Dense):
            shape = tuple(node.kernel.get_value().shape)
            in_ndim = len(node.in_shape)
            out.append(_Tensor((*path, "kernel"), f"{prefix}.weight", shape, in_ndim))
            if node.bias is not None:
                out.append(_Tensor((*path, "bias"), f"{prefix}.bias", node.out_shape, 0))
        elif isinstance(node, Embed):
            shape = tuple(node.embedding.get_value().shape)
            out.append(_Tensor((*path, "embedding"), f"{prefix}.weight", shape, None))
        elif isinstance(node, RMSNorm):
            shape = tuple(node.scale.get_value().shape)
            out.append(_Tensor((*path, "scale"), f"{prefix}.weight", shape, None))
    return out


def tensor_names(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """The Hugging Face tensor names and shapes a checkpoint of ``config`` must provide.

    Example:
      >>> from jaxpref.models import TransformerConfig, tensor_names
      >>> names = tensor_names(TransformerConfig.tiny())
      >>> names["model.layers.0.self_attn.k_proj.weight"], names["lm_head.weight"]
      ((32, 64), (128, 64))
    """
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    return {t.name: t.hf_shape for t in _tensors(abstract)}


def _ignorable(name: str, config: TransformerConfig) -> bool:
    # Old Llama checkpoints store RoPE buffers; tied checkpoints may still store lm_head.
    return name.endswith("rotary_emb.inv_freq") or (
        config.tie_embeddings and name == "lm_head.weight"
    )


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_from_source(
    config: TransformerConfig,
    source: TensorSource,
    *,
    mesh: Mesh | None = None,
    rules: ShardingRules | None = None,
    description: str = "checkpoint",
) -> Transformer:
    """Builds a :class:`Transformer` from a tensor source, placing each tensor as it is read.

    Args:
      config: the model config (its ``param_dtype`` is the dtype tensors are cast to).
      source: a :class:`TensorSource` with Hugging Face tensor names.
      mesh: optional mesh; each parameter is created directly with its ``NamedSharding``.
      rules: sharding rules (required with a mesh).
      description: names the checkpoint in error messages.

    Raises:
      CheckpointError: a tensor is missing, unexpected, or has the wrong shape.
    """
    if (mesh is None) != (rules is None):
        raise ValueError("mesh and rules must be given together.")
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    tensors = _tensors(abstract)
    available = source.names()
    missing = [t.name for t in tensors if t.name not in available]
    if missing:
        raise CheckpointError(
            f"{description}: missing weight tensor(s) {_listing(missing)} "
            f"(a {config.architecture!r} model with {config.num_layers} layers, "
            f"tie_embeddings={config.tie_embeddings})."
        )
    expected = {t.name for t in tensors}
    unexpected = sorted(n for n in available - expected if not _ignorable(n, config))
    if unexpected:
        raise CheckpointError(
            f"{description}: unexpected tensor(s) {_listing(unexpected)} that a "
            f"{config.architecture!r} model does not have; is config.json right?"
        )
    for t in tensors:
        got = source.shape(t.name)
        if got != t.hf_shape:
            raise CheckpointError(
                f"{description}: shape mismatch for tensor {t.name!r}: the checkpoint has "
                f"{got}, the config expects {t.hf_shape}."
            )

    graphdef, state = nnx.split(abstract)
    variables = dict(nnx.to_flat_state(state))
    dtype = np.dtype(config.param_dtype)
    for t in tensors:
        variable = variables[t.path]
        value = t.to_model(source.get(t.name)).astype(dtype)
        if mesh is None:
            placed = jnp.asarray(value)
        else:
            axes = variable.get_metadata()["out_sharding"]
            sharding = sharding_for(value.shape, axes, mesh, rules, t.name)
            placed = jax.make_array_from_callback(
                value.shape, sharding, lambda index, value=value: value[index]
            )
        variable.set_value(placed)
    return nnx.merge(graphdef, nnx.from_flat_state(list(variables.items())))


def _refuse_pickle(files: list[Path]) -> CheckpointError:
    return CheckpointError(
        f"{_listing([str(f) for f in files])}: pickle-based checkpoint(s) are refused; "
        "jaxpref never unpickles (unpickling can run arbitrary code). Convert to safetensors "
        "first, e.g. `transformers.AutoModelForCausalLM.from_pretrained(src)"
        ".save_pretrained(dst)` (writes model.safetensors) in a trusted environment."
    )


def _safetensors_files(path: Path) -> tuple[Path, list[Path] | dict[str, Path]]:
    """Returns (directory holding config.json, files or a name -> file index)."""
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    if path.is_file():
        if path.suffix in _PICKLE_SUFFIXES:
            raise _refuse_pickle([path])
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path}: expected a directory, .safetensors or .gguf file.")
        return path.parent, [path]
    index = path / _INDEX
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        files = {name: path / file for name, file in weight_map.items()}
        absent = sorted({f.name for f in files.values() if not f.exists()})
        if absent:
            raise CheckpointError(f"{index} lists missing file(s) {_listing(absent)}.")
        return path, files
    single = path / "model.safetensors"
    if single.exists():
        return path, [single]
    found = sorted(path.glob("*.safetensors"))
    if found:
        return path, found
    pickles = sorted(p for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise _refuse_pickle(pickles)
    raise CheckpointError(f"{path}: no model.safetensors, {_INDEX} or *.safetensors found.")


def from_pretrained(
    path: str | os.PathLike,
    *,
    dtype: Any = jnp.float32,
    mesh: Mesh | None = None,
    rules: ShardingRules | None = None,
    compute_dtype: Any = None,
    **config_overrides: Any,
) -> Transformer:
    """Loads a Hugging Face Llama-family checkpoint as a :class:`Transformer`.

    Args:
      path: a checkpoint directory (``config.json`` + ``model.safetensors`` or an
        index-sharded ``model.safetensors.index.json``), a ``.safetensors`` file next to its
        ``config.json``, or a ``.gguf`` file (read by :func:`jaxpref.models.gguf.read_gguf`).
      dtype: parameter dtype (tensors are cast to it on the host).
      mesh: optional mesh (see :func:`jaxpref.models.make_mesh`); each parameter is placed
        with its ``NamedSharding`` as it is read.
      rules: :class:`~jaxpref.models.ShardingRules`; default
        ``ShardingRules.fsdp_tensor()`` when a mesh is given. Rules without a mesh are an
        error.
      compute_dtype: the activation/matmul dtype (``config.dtype``); None computes in
        ``dtype``. ``dtype=jnp.float32, compute_dtype=jnp.bfloat16`` is mixed precision.
      **config_overrides: other :class:`~jaxpref.models.TransformerConfig` fields, e.g.
        ``remat="full"``.

    Returns:
      The model, with ``model.config`` built from ``config.json``.

    Raises:
      CheckpointError: pickle checkpoints, missing/unexpected tensors, shape mismatches.
      ValueError: an unsupported architecture (the message lists the supported ones).
    """
    if rules is not None and mesh is None:
        raise ValueError("rules were given without a mesh; pass mesh= as well.")
    if mesh is not None:
        rules = ShardingRules.fsdp_tensor() if rules is None else rules
        check_mesh(mesh, rules)
    if "param_dtype" in config_overrides:
        raise TypeError("Pass the parameter dtype as dtype=, not param_dtype=.")
    path = Path(path)
    overrides = {"param_dtype": dtype, "dtype": compute_dtype, **config_overrides}
    if path.suffix == ".gguf":
        from jaxpref.models import gguf  # lazy: optional module and dependency

        hf_config, arrays = gguf.read_gguf(path)
        config = TransformerConfig.from_hf(hf_config, **overrides)
        source: TensorSource = ArraySource(arrays)
    else:
        directory, files = _safetensors_files(path)
        if not (directory / "config.json").exists():
            raise CheckpointError(f"{directory}: config.json not found.")
        config = TransformerConfig.from_hf(directory / "config.json", **overrides)
        if isinstance(files, dict):
            source = SafetensorsSource(files)
        else:
            source = SafetensorsSource.from_files(files)
    return load_from_source(config, source, mesh=mesh, rules=rules, description=str(path))


def save_pretrained(model: Transformer, path: str | os.PathLike) -> None:
    """Writes ``config.json`` and ``model.safetensors`` that transformers can load.

    Tensors are written in the parameter dtype under Hugging Face names and layouts (the
    ``lm_head.weight`` is omitted when embeddings are tied, as transformers does). Sharded
    parameters are gathered to the host one at a time (single-host only).

    Args:
      model: a :class:`Transformer`.
      path: output directory (created if needed).
    """
    try:
        from safetensors.numpy import save_file
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("save_pretrained needs 'safetensors': pip install 'jaxpref[hf]'.") from e
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    variables = dict(nnx.to_flat_state(nnx.state(model)))
    tensors = {}
    for t in _tensors(model):
        value = np.asarray(jax.device_get(variables[t.path].get_value()))
        tensors[t.name] = np.ascontiguousarray(t.to_hf(value))
    save_file(tensors, os.fspath(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(
        json.dumps(model.config.to_hf(), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
