"""Checkpoints of a run: the train state, the data-iterator state and the config, via Orbax.

:class:`Checkpointer` wraps :class:`orbax.checkpoint.CheckpointManager`. Each step directory
``<directory>/<step>/`` holds three Orbax items:

* ``state``: the whole train-state pytree (params, optimiser state, step, PRNG keys, ...)
  written with ``StandardSave`` (one OCDBT/TensorStore store, sharded arrays written by the
  processes that hold them). Typed PRNG keys are stored as their raw ``key_data``
  (``uint32``) and re-wrapped on restore, so the files hold plain arrays.
* ``meta``: JSON: the format version, the PRNG-key implementations by key path, and the
  data-iterator state (ints, floats, strings, lists, dicts and NumPy arrays, stored exactly).
* ``config``: the run config as JSON.

Atomicity: Orbax writes a step into ``<step>.orbax-checkpoint-tmp`` and renames it to
``<step>`` only once every item is complete (on GCS it writes a ``commit_success.txt``
instead). A write killed half-way leaves only the temporary directory, which is never listed
as a step, so :meth:`Checkpointer.latest_step` still names the previous complete step; the
next :class:`Checkpointer` on the directory deletes such leftovers.

Asynchronous saves: :meth:`Checkpointer.save` copies the arrays to host memory before it
returns (so the caller may donate or overwrite them at once) and writes in a background
thread; the next save, :meth:`~Checkpointer.restore`, :meth:`~Checkpointer.wait` and
:meth:`~Checkpointer.close` wait for it.

Multi-process runs: every process calls :meth:`~Checkpointer.save` and
:meth:`~Checkpointer.restore` with the same arguments. The JSON items are written by process
0 only, so ``data_state`` must be the same on every process (e.g. a global position and
seed from which each process derives its own shard).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "ConfigMismatchError", "Restored"]

FORMAT_VERSION = 1
_STATE, _META, _CONFIG = "state", "meta", "config"
_MISSING = "<missing>"


class ConfigMismatchError(ValueError):
    """The checkpoint's config differs from the run's in fields that change the state's shapes.

    Attributes:
      fields: the differing config fields (dotted paths) -> ``(in checkpoint, now)``.
    """

    def __init__(self, message: str, *, fields: Mapping[str, tuple[Any, Any]]):
        super().__init__(message)
        self.fields = dict(fields)


@dataclasses.dataclass(frozen=True)
class Restored:
    """What :meth:`Checkpointer.restore` returns.

    Attributes:
      step: the restored step.
      state: the train state, with the target's structure, dtypes and shardings.
      data_state: the data-iterator state saved with it (None if none was saved).
      config: the config stored in the checkpoint (None if none was saved).
      config_diff: config fields that differ from the run's (dotted path ->
        ``(in checkpoint, now)``); these did not change any shape (e.g. ``num_steps``).
    """

    step: int
    state: Any
    data_state: Any
    config: dict[str, Any] | None
    config_diff: dict[str, tuple[Any, Any]]


class Checkpointer:
    """Saves every ``save_every`` steps (and when forced), keeps the last ``max_to_keep``.

    Args:
      directory: where step directories go (created if missing), e.g. ``workdir/checkpoints``.
      save_every: save when ``step % save_every == 0``; None saves only when forced. Orbax also
        saves at a step where a multi-host preemption notice was agreed on.
      max_to_keep: how many of the latest checkpoints to keep (None keeps all).
      config: the run config (a dataclass or a JSON-serialisable mapping), saved with every
        checkpoint and compared on restore.
      async_save: write in a background thread.

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as d, Checkpointer(d, save_every=2) as ckpt:
      ...     state = {"w": jax.numpy.ones(3), "step": jax.numpy.int32(2)}
      ...     ckpt.save(1, state), ckpt.save(2, state, data_state={"position": 64})
      ...     restored = ckpt.restore(state)
      ...     restored.step, restored.data_state
      (False, True)
      (2, {'position': 64})
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        save_every: int | None = None,
        max_to_keep: int | None = 3,
        config: Any = None,
        async_save: bool = True,
    ):
        if save_every is not None and save_every < 1:
            raise ValueError(f"save_every must be a positive int or None, got {save_every}.")
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be a positive int or None, got {max_to_keep}.")
        self.directory = pathlib.Path(directory).absolute()
        self.config = _config_dict(config)
        policies: list[Any] = [ocp.checkpoint_managers.PreemptionCheckpointingPolicy()]
        if save_every is not None:
            policies.append(ocp.checkpoint_managers.FixedIntervalPolicy(save_every))
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.AnySavePolicy(policies),
            preservation_policy=(
                None if max_to_keep is None else ocp.checkpoint_managers.LatestN(max_to_keep)
            ),
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        # Handlers given up front, so that a fresh manager can read metadata before any save.
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                _STATE: ocp.StandardCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler(),
                _CONFIG: ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        """The latest checkpointed step, or None.

        On a fresh :class:`Checkpointer` this is the latest *complete* step on disk (what a
        resumed run restores). Afterwards it also counts a save still being written in the
        background; :meth:`restore` waits for that save first.
        """
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every kept step, ascending (see :meth:`latest_step` about saves in flight)."""
        return sorted(self._manager.all_steps())

    def should_save(self, step: int) -> bool:
        """Whether :meth:`save` at ``step`` would write without ``force``."""
        return self._manager.should_save(step)

    def save(self, step: int, state: Any, *, data_state: Any = None, force: bool = False) -> bool:
        """Saves ``state`` (and ``data_state``) as ``step`` if due, or if ``force``.

        A step that is already saved is never rewritten (a forced final save at a step that
        was just saved on schedule is a no-op).

        Args:
          step: the step number (e.g. the number of updates applied).
          state: the train-state pytree of arrays (typed PRNG keys allowed).
          data_state: the data-iterator state (JSON-like, NumPy arrays allowed).
          force: save even if ``step`` is not due.

        Returns:
          Whether a save was started.
        """
        if step in self._manager.all_steps():
            return False
        if not force and not self._manager.should_save(step):
            return False
        saved_state, key_impls = _keys_to_data(state)
        meta = {
            "format_version": FORMAT_VERSION,
            "prng_keys": key_impls,
            "has_config": self.config is not None,
            "data_state": _encode(data_state),
        }
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    _STATE: ocp.args.StandardSave(saved_state),
                    _META: ocp.args.JsonSave(meta),
                    _CONFIG: ocp.args.JsonSave(self.config or {}),
                }
            ),
            force=True,
        )

    def stored_config(self, step: int | None = None) -> dict[str, Any] | None:
        """The config saved with ``step`` (default: the latest), or None if none was saved."""
        step = self._resolve_step(step)
        return self._restore_json(step)[1]

    def restore(
        self,
        target: Any,
        *,
        step: int | None = None,
        fallback_sharding: jax.sharding.Sharding | None = None,
    ) -> Restored:
        """Restores ``step`` (default: the latest complete one) into the layout of ``target``.

        ``target`` gives the structure, dtypes and shardings to restore into: concrete arrays
        (e.g. a freshly initialised state) or abstract ones, e.g. ``jax.eval_shape`` of a
        jitted init with ``out_shardings``, or :class:`jax.ShapeDtypeStruct` s with their
        ``sharding`` set. Arrays are read straight into those shardings (each process reads
        only its shards), so a state saved on one mesh restores onto another. NumPy and
        Python-scalar leaves come back as NumPy arrays. Note that Orbax casts a stored array
        to the target's dtype silently; shapes must match exactly.

        Args:
          target: a pytree like the saved state (typed PRNG keys as key arrays).
          step: the step to restore.
          fallback_sharding: for abstract leaves without a sharding (otherwise an error).

        Returns:
          A :class:`Restored`.

        Raises:
          FileNotFoundError: if there is no complete checkpoint.
          ConfigMismatchError: if the state does not fit ``target`` and the stored config
            differs from this run's; the message names the differing fields.
          ValueError: if ``target`` has abstract leaves without shardings, or does not fit
            the checkpoint for another reason.
        """
        self.wait()
        step = self._resolve_step(step)
        meta, stored_config = self._restore_json(step)
        diff = _config_diff(stored_config, self.config)
        abstract = _abstract_target(target, fallback_sharding)
        _check_keys(meta["prng_keys"], target, step)
        stored = self._manager.item_metadata(step)[_STATE]
        mismatched = _shape_mismatches(getattr(stored, "tree", None), abstract)
        if mismatched:
            shown = f"{len(mismatched)} arrays differ in shape: " + "; ".join(mismatched[:5])
            raise self._does_not_fit(step, diff, shown + (" ..." if len(mismatched) > 5 else ""))
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **{
                        _STATE: ocp.args.StandardRestore(
                            abstract, fallback_sharding=fallback_sharding
                        )
                    }
                ),
            )[_STATE]
            _check_shapes(restored, abstract)
        except (ValueError, KeyError, TypeError) as error:
            if diff:
                raise self._does_not_fit(step, diff, _first_line(error)) from error
            raise
        state = _data_to_keys(restored, target, meta["prng_keys"])
        return Restored(
            step=step,
            state=state,
            data_state=_decode(meta["data_state"]),
            config=stored_config,
            config_diff=diff,
        )

    def wait(self) -> None:
        """Blocks until the save in flight (if any) is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for the save in flight and releases Orbax's threads."""
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _does_not_fit(self, step: int, diff: dict[str, tuple[Any, Any]], why: str) -> ValueError:
        where = f"Checkpoint step {step} in {self.directory} does not fit the target state"
        if not diff:
            return ValueError(f"{where}: {why}.")
        return ConfigMismatchError(
            f"{where} ({why}); its config differs from this run's in {_describe_diff(diff)}.",
            fields=diff,
        )

    def _resolve_step(self, step: int | None) -> int:
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"No complete checkpoint in {self.directory}.")
        elif step not in self._manager.all_steps():
            raise FileNotFoundError(
                f"No complete checkpoint for step {step} in {self.directory}; "
                f"steps: {self.all_steps()}."
            )
        return step

    def _restore_json(self, step: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        items = self._manager.restore(
            step,
            args=ocp.args.Composite(
                **{_META: ocp.args.JsonRestore(), _CONFIG: ocp.args.JsonRestore()}
            ),
        )
        meta = dict(items[_META])
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"Checkpoint step {step} in {self.directory} has format version "
                f"{meta.get('format_version')}; this code reads version {FORMAT_VERSION}."
            )
        return meta, (dict(items[_CONFIG]) if meta["has_config"] else None)


# --- PRNG keys ---------------------------------------------------------------------------


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _keys_to_data(state: Any) -> tuple[Any, dict[str, str]]:
    """Replaces typed PRNG keys by their ``uint32`` key data; returns the impls by path."""
    impls: dict[str, str] = {}

    def convert(path: Any, leaf: Any) -> Any:
        if _is_key(leaf):
            impls[jax.tree_util.keystr(path)] = str(jax.random.key_impl(leaf))
            return jax.random.key_data(leaf)
        return leaf

    return jax.tree_util.tree_map_with_path(convert, state), impls


def _data_to_keys(restored: Any, target: Any, impls: Mapping[str, str]) -> Any:
    """Re-wraps the key data at the paths where ``target`` has typed keys."""

    def convert(path: Any, leaf: Any, like: Any) -> Any:
        if not _is_key(like):
            return leaf
        return jax.random.wrap_key_data(leaf, impl=impls[jax.tree_util.keystr(path)])

    return jax.tree_util.tree_map_with_path(convert, restored, target)


def _check_keys(impls: Mapping[str, str], target: Any, step: int) -> None:
    """The target has typed keys exactly where the checkpoint does, of the same impls."""
    wanted = {
        jax.tree_util.keystr(path): leaf.dtype
        for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]
        if _is_key(leaf)
    }
    if wanted.keys() != impls.keys():
        raise ValueError(
            f"Checkpoint step {step} has typed PRNG keys at {sorted(impls)}, the target at "
            f"{sorted(wanted)}."
        )
    for name, dtype in wanted.items():
        saved = jax.eval_shape(lambda impl=impls[name]: jax.random.key(0, impl=impl)).dtype
        if saved != dtype:
            raise ValueError(f"PRNG key {name} was saved as {saved}; the target wants {dtype}.")


# --- restore targets ---------------------------------------------------------------------


def _abstract_target(target: Any, fallback: jax.sharding.Sharding | None) -> Any:
    """The Orbax restore target: arrays as ShapeDtypeStructs with shardings, keys as data."""
    unsharded = []

    def convert(path: Any, leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array | jax.ShapeDtypeStruct):
            return leaf
        sharding = leaf.sharding
        if sharding is None and fallback is None:
            unsharded.append(jax.tree_util.keystr(path))
        if _is_key(leaf):
            data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
            return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

    abstract = jax.tree_util.tree_map_with_path(convert, target)
    if unsharded:
        shown = ", ".join(unsharded[:5]) + (" ..." if len(unsharded) > 5 else "")
        raise ValueError(
            f"{len(unsharded)} abstract target leaves have no sharding ({shown}); give them "
            "shardings (e.g. jax.eval_shape of a jitted init with out_shardings) or pass "
            "fallback_sharding."
        )
    return abstract


def _path_tokens(path: Any) -> tuple[str, ...]:
    """A key path as plain strings.

    Orbax's metadata tree turns named tuples and dataclasses into lists and dicts; as strings,
    its paths and the target's match.
    """
    tokens = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                tokens.append(str(getattr(key, attr)))
                break
        else:
            tokens.append(str(key))
    return tuple(tokens)


def _shape_mismatches(stored: Any | None, abstract: Any) -> list[str]:
    """``"<path>: checkpoint <shape>, target <shape>"`` for every array whose shape differs.

    Leaves whose paths cannot be matched are left to Orbax (which reports tree mismatches).
    """
    if stored is None:
        return []
    stored_shapes = {
        _path_tokens(path): tuple(leaf.shape)
        for path, leaf in jax.tree_util.tree_flatten_with_path(stored)[0]
        if getattr(leaf, "shape", None) is not None
    }
    mismatched = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            continue
        shape = stored_shapes.get(_path_tokens(path))
        if shape is not None and shape != leaf.shape:
            name = jax.tree_util.keystr(path)
            mismatched.append(f"{name}: checkpoint {shape}, target {leaf.shape}")
    return mismatched


def _check_shapes(restored: Any, abstract: Any) -> None:
    def check(path: Any, got: Any, want: Any) -> None:
        if isinstance(want, jax.ShapeDtypeStruct) and tuple(np.shape(got)) != want.shape:
            raise ValueError(
                f"Restored {jax.tree_util.keystr(path)} has shape {np.shape(got)}, the target "
                f"{want.shape}."
            )

    jax.tree_util.tree_map_with_path(check, restored, abstract)


# --- JSON: config and data-iterator state ------------------------------------------------


def _json_default(x: Any) -> Any:
    if isinstance(x, np.ndarray | np.generic):
        return x.tolist()
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    raise TypeError(f"config value of type {type(x).__name__} is not JSON-serialisable")


def _config_dict(config: Any) -> dict[str, Any] | None:
    """The config as plain JSON data (tuples become lists), or None."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dataclass or a mapping, not {type(config).__name__}.")
    return json.loads(json.dumps(dict(config), default=_json_default))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _config_diff(
    stored: dict[str, Any] | None, current: dict[str, Any] | None
) -> dict[str, tuple[Any, Any]]:
    if stored is None or current is None:
        return {}
    old, new = _flatten(stored), _flatten(current)
    return {
        key: (old.get(key, _MISSING), new.get(key, _MISSING))
        for key in sorted(old.keys() | new.keys())
        if old.get(key, _MISSING) != new.get(key, _MISSING)
    }


def _describe_diff(diff: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} (checkpoint: {old!r}, now: {new!r})" for k, (old, new) in diff.items())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


_ARRAY_TAG, _TUPLE_TAG = "__ndarray__", "__tuple__"


def _encode(value: Any) -> Any:
    """Data-iterator state -> JSON data; NumPy arrays/scalars and tuples round-trip exactly."""
    if isinstance(value, jax.Array):
        value = np.asarray(jax.device_get(value))
    if isinstance(value, np.ndarray | np.generic):
        array = np.asarray(value)
        return {
            _ARRAY_TAG: array.ravel().tolist(),
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "scalar": isinstance(value, np.generic),
        }
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"data_state dict keys must be strings, got {list(value)}.")
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {_TUPLE_TAG: [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"data_state value of type {type(value).__name__} is not supported.")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if _ARRAY_TAG in value:
        array = np.asarray(value[_ARRAY_TAG], dtype=np.dtype(value["dtype"]))
        array = array.reshape(value["shape"])
        return array[()] if value["scalar"] else array
    if _TUPLE_TAG in value:
        return tuple(_decode(v) for v in value[_TUPLE_TAG])
    return {k: _decode(v) for k, v in value.items()}
