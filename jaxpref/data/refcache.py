"""Reference log-probs computed once per (dataset, model, tokenizer, lengths) and cached.

:func:`cached_reference_logps` runs a caller's ``logp_fn(batch) -> array`` over a tokenised
dataset (in dataset order, batches from :class:`~jaxpref.data.iterator.BatchIterator`) and
returns one log-prob per sequence: ``[N, I]`` float32 (``I`` = 2 for pairs: chosen,
rejected; ``K`` for ranked lists, NaN for absent items) or ``[N]`` for unpaired data, row
``n`` for ``examples[n]``. The training engine puts them into batches by
``example_index`` with :func:`attach_reference_logps`. This module never imports a model:
``logp_fn`` is the model, and the caller names it.

The cache lives in a directory the caller picks (next to the dataset) as two files:

* ``{name}-{digest}.npz``: the array ``logps``;
* ``{name}.json``: the manifest: the :class:`CacheKey` parts and their ``digest``, the data
  file's name and its SHA-256.

It is reused when the key's digest matches, and recomputed when any part changes: the
dataset (a caller id, default the fingerprint of the tokenised examples), the model id
(e.g. :func:`fingerprint_params` or a checkpoint name), the tokenizer id (e.g.
:func:`fingerprint_tokenizer`), the tokenisation settings (max lengths, truncation sides),
or the tokens themselves (always fingerprinted). Both files are written atomically (a
temporary file in the same directory, fsync, ``os.replace``), the data file first, and an
old data file is deleted only after the new manifest is in place. So a crash at any point
leaves the previous cache readable, or no cache, never a half-written one; a data file
that does not match its manifest's SHA-256 is ignored and recomputed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import pathlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxpref.data.iterator import BatchIterator
from jaxpref.data.tokenize import TokenizeConfig, TokenizedExample

__all__ = [
    "CacheKey",
    "attach_reference_logps",
    "cached_reference_logps",
    "fingerprint_examples",
    "fingerprint_params",
    "fingerprint_records",
    "fingerprint_tokenizer",
    "load_reference_logps",
    "save_reference_logps",
]

logger = logging.getLogger(__name__)

_FORMAT = 1


def _json_digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- fingerprints


def fingerprint_examples(examples: Iterable[TokenizedExample]) -> str:
    """SHA-256 of the tokens and loss masks of tokenised examples (what ``logp_fn`` sees)."""
    h = hashlib.sha256()
    for example in examples:
        h.update(f"{example.kind}:{example.num_sequences};".encode())
        for ids, mask in zip(example.input_ids, example.response_mask, strict=True):
            h.update(np.int64(len(ids)).tobytes())
            h.update(np.ascontiguousarray(ids, np.int32).tobytes())
            h.update(np.packbits(np.asarray(mask, bool)).tobytes())
    return h.hexdigest()


def fingerprint_records(records: Iterable[Any]) -> str:
    """SHA-256 of records' contents (every field, in order): a dataset id."""
    h = hashlib.sha256()
    for record in records:
        h.update(_json_digest(dataclasses.asdict(record)).encode())
    return h.hexdigest()


def fingerprint_tokenizer(tokenizer: Any) -> str:
    """SHA-256 of a tokenizer: its serialised ``tokenizer.json`` (vocabulary, merges,
    normalisation, special tokens, post-processor) or its vocabulary, plus the chat
    template and the special-token map."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(_json_digest(tokenizer.get_vocab()).encode())
    extra = {
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special_tokens": getattr(tokenizer, "special_tokens_map", None),
    }
    h.update(_json_digest(extra).encode())
    return h.hexdigest()


def fingerprint_params(params: Any) -> str:
    """SHA-256 of a parameter pytree: every leaf's path, dtype, shape and bytes.

    Reads every parameter to the host (slow for billions of parameters; a checkpoint name
    and step is a cheaper model id) and needs fully addressable arrays.
    """
    import jax

    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        array = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """What a cached table of reference log-probs depends on.

    Attributes:
      dataset: the dataset's id (e.g. :func:`fingerprint_records` or a file hash).
      model: the reference model's id (e.g. :func:`fingerprint_params`).
      tokenizer: the tokenizer's id (e.g. :func:`fingerprint_tokenizer`).
      lengths: the tokenisation settings (``TokenizeConfig.to_json()``: max lengths,
        truncation sides, ...).
      tokens: :func:`fingerprint_examples` of the tokenised dataset.
    """

    dataset: str
    model: str
    tokenizer: str
    lengths: Mapping[str, Any]
    tokens: str

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "lengths": dict(self.lengths)}

    def digest(self) -> str:
        return _json_digest(self.as_json())


# --------------------------------------------------------------------------- files


def _fsync_dir(path: pathlib.Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: pathlib.Path, data: bytes) -> None:
    """Writes ``path`` so that it holds either its old contents or ``data``, nothing else."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _manifest_path(cache_dir: pathlib.Path, name: str) -> pathlib.Path:
    return cache_dir / f"{name}.json"


def _read_manifest(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable reference cache manifest %s: %s", path, error)
        return None
    return manifest if isinstance(manifest, dict) else None


def load_reference_logps(
    cache_dir: str | os.PathLike[str], key: CacheKey, *, name: str = "reference_logps"
) -> np.ndarray | None:
    """The cached table for ``key``, or None if absent, stale (logged) or corrupt (logged)."""
    cache_dir = pathlib.Path(cache_dir)
    manifest = _read_manifest(_manifest_path(cache_dir, name))
    if manifest is None:
        return None
    if manifest.get("format") != _FORMAT or manifest.get("digest") != key.digest():
        old = manifest.get("key") or {}
        changed = [k for k, v in key.as_json().items() if old.get(k) != v]
        logger.info("reference cache %s is stale (changed: %s)", cache_dir / name, changed)
        return None
    data_path = cache_dir / str(manifest.get("file"))
    try:
        data = data_path.read_bytes()
    except OSError:
        logger.warning("reference cache data file %s is missing", data_path)
        return None
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        logger.warning("reference cache data file %s does not match its manifest", data_path)
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return np.asarray(npz["logps"])


def save_reference_logps(
    cache_dir: str | os.PathLike[str],
    key: CacheKey,
    logps: np.ndarray,
    *,
    name: str = "reference_logps",
) -> pathlib.Path:
    """Writes the table and its manifest atomically; returns the manifest's path."""
    cache_dir = pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = key.digest()
    buffer = io.BytesIO()
    np.savez(buffer, logps=np.asarray(logps, np.float32))
    data = buffer.getvalue()
    data_name = f"{name}-{digest[:16]}.npz"
    _atomic_write(cache_dir / data_name, data)
    manifest = {
        "format": _FORMAT,
        "digest": digest,
        "key": key.as_json(),
        "file": data_name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "shape": list(np.shape(logps)),
        "dtype": "float32",
    }
    path = _manifest_path(cache_dir, name)
    _atomic_write(path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    for old in cache_dir.glob(f"{name}-*.npz"):
        if old.name != data_name:
            old.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------- compute


def _compute(
    examples: Sequence[TokenizedExample],
    logp_fn: Callable[[dict[str, np.ndarray]], Any],
    **iterator_kwargs: Any,
) -> np.ndarray:
    it = BatchIterator(
        examples, shuffle=False, num_epochs=1, drop_remainder=False, **iterator_kwargs
    )
    item_shape = () if it.kind == "unpaired" else (it.num_items,)
    table = np.full((len(examples), *item_shape), np.nan, np.float32)
    seen = np.zeros(len(examples), bool)
    for batch in it:
        index = batch["example_index"]
        values = np.asarray(logp_fn(batch), np.float32)
        if values.shape != index.shape + item_shape:
            raise ValueError(
                f"logp_fn returned shape {values.shape}; expected {index.shape + item_shape} "
                "(example_index's shape, then the item axis)"
            )
        if "item_mask" in batch:
            values = np.where(batch["item_mask"], values, np.nan)
        real = index >= 0
        table[index[real]] = values[real]
        seen[index[real]] = True
    if not seen.all():  # cannot happen with drop_remainder=False; guards a future change
        raise RuntimeError(f"{int((~seen).sum())} examples got no reference log-prob")
    return table


def cached_reference_logps(
    examples: Sequence[TokenizedExample],
    logp_fn: Callable[[dict[str, np.ndarray]], Any],
    *,
    cache_dir: str | os.PathLike[str],
    model_id: str,
    tokenizer_id: str,
    config: TokenizeConfig | None = None,
    dataset_id: str | None = None,
    name: str = "reference_logps",
    batch_size: int = 8,
    buckets: Sequence[int] | None = None,
    max_segments: int | None = None,
    pad_id: int = 0,
    recompute: bool = False,
) -> np.ndarray:
    """Reference log-probs of every sequence, from the cache when its key matches.

    Args:
      examples: the tokenised dataset (``TokenizedDataset`` or a sequence of examples).
      logp_fn: ``logp_fn(batch) -> [*example_index.shape, I]`` (``[*example_index.shape]``
        for unpaired data): summed log-probs of each sequence under the reference model
        (batch layout in :mod:`jaxpref.data.batching`). Values of padding rows are ignored.
      cache_dir: directory of the cache (created if needed).
      model_id: identity of the reference model.
      tokenizer_id: identity of the tokenizer.
      config: the :class:`TokenizeConfig` the examples were made with.
      dataset_id: identity of the dataset (default: the tokens' fingerprint alone).
      name: file name stem, to keep several caches in one directory.
      batch_size, buckets, max_segments, pad_id: batching of the computation.
      recompute: ignore a matching cache.

    Returns:
      float32 ``[N, I]`` (``[N]`` for unpaired data); row ``n`` belongs to ``examples[n]``.
    """
    tokens = fingerprint_examples(examples)
    key = CacheKey(
        dataset=tokens if dataset_id is None else dataset_id,
        model=model_id,
        tokenizer=tokenizer_id,
        lengths=(TokenizeConfig() if config is None else config).to_json(),
        tokens=tokens,
    )
    if not recompute:
        cached = load_reference_logps(cache_dir, key, name=name)
        if cached is not None and len(cached) == len(examples):
            logger.info("reusing reference log-probs from %s", pathlib.Path(cache_dir) / name)
            return cached
    table = _compute(
        examples,
        logp_fn,
        batch_size=batch_size,
        buckets=buckets,
        max_segments=max_segments,
        pad_id=pad_id,
    )
    save_reference_logps(cache_dir, key, table, name=name)
    return table


def attach_reference_logps(
    batch: Mapping[str, np.ndarray], logps: np.ndarray, *, key: str = "reference_logps"
) -> dict[str, np.ndarray]:
    """Adds ``batch[key] = logps[example_index]`` (0 for padding rows and absent items).

    The result has ``example_index``'s shape followed by the item axis (``[B, I]``, or
    ``[B, S, I]`` when packed; no item axis for unpaired data).
    """
    index = np.asarray(batch["example_index"])
    real = index >= 0
    table = np.asarray(logps, np.float32)
    if real.any() and int(index.max()) >= len(table):
        raise ValueError(f"example_index {int(index.max())} outside a table of {len(table)}")
    values = table[np.where(real, index, 0)]
    keep = real.reshape(real.shape + (1,) * (values.ndim - real.ndim))
    if "item_mask" in batch:
        keep = keep & np.asarray(batch["item_mask"])
    return {**batch, key: np.where(keep, values, 0.0).astype(np.float32)}
