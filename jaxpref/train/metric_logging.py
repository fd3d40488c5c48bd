"""Metric logging: ``metrics.jsonl``, TensorBoard, ``summary.json`` and a progress bar.

Files under the run's ``workdir``:

* ``metrics.jsonl``: one JSON object per logged step, ``{"step": 12, "loss": 0.69, ...}``,
  flushed line by line. A non-finite value is written as ``NaN`` / ``Infinity`` (Python's
  JSON dialect, read back by :func:`read_metrics`, ``json.loads`` and pandas).
* ``tensorboard/``: TensorBoard event files (tensorboardX), one scalar per metric.
* ``summary.json``: whatever the run reports at the end (:func:`write_summary`).

Asynchronous fetching: :meth:`MetricLogger.log` takes the step's metrics as device arrays,
starts their device-to-host copies and returns at once; it writes (and returns) the metrics
of the *previous* logged step, whose computation has had a whole step to finish. The loop
therefore never waits on the step it just dispatched, and sees each step's host metrics one
call later (:meth:`MetricLogger.flush` fetches the last one, e.g. before a checkpoint or at
the end).

Resuming: pass the step the run resumed from as ``resume_step``. Lines of ``metrics.jsonl``
with a larger step (written after that checkpoint by the run that crashed) are dropped, as
is a partial last line; TensorBoard hides the same steps through its ``purge_step``. A run
that starts fresh (``resume_step=None``) drops every earlier line: in the same workdir, all
of them are about to be rewritten.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import jax
import numpy as np

__all__ = ["MetricLogger", "ProgressBar", "read_metrics", "write_summary"]

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"


def _atomic_write_text(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _to_float(name: str, value: Any) -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"Metric {name!r} must be a scalar; got shape {array.shape}.")
    return float(array.reshape(()))


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (or of ``workdir/metrics.jsonl``).

    A partial last line (a run killed while writing it) is skipped.

    Args:
      path: the file, or the directory holding it.

    Returns:
      One dict per complete line, in file order.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def write_summary(workdir: str | os.PathLike[str], summary: Mapping[str, Any]) -> pathlib.Path:
    """Writes ``workdir/summary.json`` atomically (write a temporary file, then rename).

    Array values are converted with ``.tolist()``; the rest must be JSON-serialisable.

    Args:
      workdir: the run directory.
      summary: the final results (e.g. final metrics, ``params_sha256``, wall time).

    Returns:
      The path written.
    """
    path = pathlib.Path(workdir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)

    def default(x: Any) -> Any:
        if isinstance(x, np.ndarray | np.generic | jax.Array):
            return np.asarray(x).tolist()
        raise TypeError(f"summary value of type {type(x).__name__} is not JSON-serialisable")

    _atomic_write_text(path, json.dumps(dict(summary), indent=2, sort_keys=True, default=default))
    return path


class MetricLogger:
    """Writes each step's scalar metrics to ``metrics.jsonl`` and TensorBoard.

    See the module docstring for the files, the one-step-late fetching and resuming.
    Only the primary process (``jax.process_index() == 0``) writes files; every process gets
    the same host metrics back, so all of them can run the same NaN guard.

    Args:
      workdir: the run directory (created if missing).
      tensorboard: also write TensorBoard event files under ``workdir/tensorboard``.
      resume_step: the step restored from the checkpoint, or None for a fresh start.
      is_primary: whether this process writes files (default: process 0).

    Example:
      >>> import tempfile
      >>> with tempfile.TemporaryDirectory() as d:
      ...     with MetricLogger(d, tensorboard=False) as logger:
      ...         logger.log(1, {"loss": jax.numpy.float32(0.5)})
      ...         logger.log(2, {"loss": jax.numpy.float32(0.25)})
      ...     [r["loss"] for r in read_metrics(d)]
      (1, {'loss': 0.5})
      [0.5, 0.25]
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        tensorboard: bool = True,
        resume_step: int | None = None,
        is_primary: bool | None = None,
    ):
        self.workdir = pathlib.Path(workdir)
        self.is_primary = jax.process_index() == 0 if is_primary is None else is_primary
        self._pending: tuple[int, dict[str, Any]] | None = None
        self._file: IO[str] | None = None
        self._writer: Any = None
        if not self.is_primary:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / METRICS_FILE
        if path.exists():
            limit = -math.inf if resume_step is None else resume_step
            kept = [r for r in read_metrics(path) if r["step"] <= limit]
            _atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(path, "a")  # closed in close()
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: ~0.7 s

            self._writer = SummaryWriter(
                logdir=str(self.workdir / TENSORBOARD_DIR),
                purge_step=0 if resume_step is None else resume_step + 1,
                flush_secs=30,
                # tensorboardX names files by the second; a writer started in the same second
                # as an earlier one (a quick restart) would truncate its file.
                filename_suffix=f".{os.getpid()}.{time.time_ns()}",
            )

    def log(self, step: int, metrics: Mapping[str, Any]) -> tuple[int, dict[str, float]] | None:
        """Queues this step's metrics; writes and returns the previous queued step's.

        Args:
          step: the step number (e.g. the number of updates applied so far).
          metrics: name -> scalar (device arrays are best: their host copy starts now).

        Returns:
          ``(step, {name: float})`` of the previously queued step, or None if there was none.
        """
        for value in metrics.values():
            if isinstance(value, jax.Array):
                value.copy_to_host_async()
        previous = self.flush()
        self._pending = (int(step), dict(metrics))
        return previous

    def flush(self) -> tuple[int, dict[str, float]] | None:
        """Fetches, writes and returns the queued step's metrics (None if nothing is queued)."""
        if self._pending is None:
            return None
        step, metrics = self._pending
        self._pending = None
        host = jax.device_get(metrics)
        values = {name: _to_float(name, value) for name, value in host.items()}
        self.write_scalars(step, values)
        return step, values

    def write_scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        """Writes host scalars for ``step`` now (e.g. evaluation results), bypassing the queue.

        Args:
          step: the step number.
          metrics: name -> float.
        """
        if not self.is_primary:
            return
        record = {"step": int(step)} | {k: _to_float(k, v) for k, v in metrics.items()}
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self._writer is not None:
            for name, value in record.items():
                if name != "step":
                    self._writer.add_scalar(name, value, global_step=record["step"])

    def close(self) -> tuple[int, dict[str, float]] | None:
        """Flushes the queued step and closes the files; returns what :meth:`flush` returns."""
        last = self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return last

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProgressBar:
    """A tqdm progress bar over steps showing loss, accuracy and throughput.

    Args:
      total: the last step of the run.
      initial: the step the run starts from (the resumed step, or 0).
      keys: metric names to show when present (default ``("loss", "accuracy")``).
      unit: what ``num_examples`` counts, for the throughput label (``"ex"``, ``"tok"``).
      disable: hide the bar (default: on every process but the primary one).
      file: where to draw it (default: stderr).
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        keys: Sequence[str] = ("loss", "accuracy"),
        unit: str = "ex",
        disable: bool | None = None,
        file: IO[str] | None = None,
    ):
        from tqdm import tqdm

        if disable is None:
            disable = jax.process_index() != 0
        self._bar = tqdm(
            total=total,
            initial=initial,
            unit="step",
            disable=disable,
            file=file,
            dynamic_ncols=True,
        )
        self._keys = tuple(keys)
        self._unit = unit
        self._step = initial
        self._time = time.perf_counter()

    def update(
        self,
        step: int,
        metrics: Mapping[str, float] | None = None,
        *,
        num_examples: int | None = None,
    ) -> None:
        """Moves the bar to ``step`` and shows the chosen metrics.

        Args:
          step: the step reached.
          metrics: host metrics (e.g. what :meth:`MetricLogger.log` returned).
          num_examples: examples (or tokens) processed since the previous update; shown as a
            rate over the wall time since then.
        """
        now = time.perf_counter()
        postfix = {k: f"{float(metrics[k]):.4g}" for k in self._keys if metrics and k in metrics}
        if num_examples is not None and now > self._time:
            postfix[f"{self._unit}/s"] = f"{num_examples / (now - self._time):.4g}"
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(step - self._step)
        self._step = step
        self._time = now

    def close(self) -> None:
        """Closes the bar."""
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
