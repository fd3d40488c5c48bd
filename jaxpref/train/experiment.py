"""What every experiment script shares: the command line, the workdir and its reports.

Each script in ``experiments/`` defines a frozen config dataclass (with a ``small()``
classmethod for the test suite) and a ``run(config, workdir) -> dict`` returning its
headline numbers, then calls :func:`main`. The command line is the same for all of them::

    python experiments/NAME.py --workdir DIR [--small] [--set key=value ...]

and every run leaves in its workdir: ``config.json``, ``results.json`` (the headline numbers
plus ``seconds``), ``summary.md`` (a table and the plots, readable on its own) and the PNG
plots the script made (:func:`save_plot`). Every run also leaves its per-step scalars in
``metrics.jsonl`` (read back by :func:`jaxpref.train.read_metrics`) and TensorBoard events
under ``tensorboard/``: runs that train with :func:`jaxpref.train.train` get them (and
checkpoints) from the engine, in the workdir it is given (the scripts give each training
phase a subdirectory), and scripts that train in their own jitted loops write their curves
to the workdir itself with :func:`log_curves`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxpref.train.config import apply_overrides, to_dict
from jaxpref.train.mesh import maybe_initialize_distributed
from jaxpref.train.metric_logging import MetricLogger

#: Libraries whose INFO logging an experiment run shows only from WARNING up.
QUIET_LOGGERS = ("absl", "orbax", "jax", "jaxlib", "tensorboardX")

# The characters TensorBoard keeps in a tag (tensorboardX rewrites any other as "_").
_METRIC_NAME = re.compile(r"[\w.-][\w./-]*")


@dataclasses.dataclass(frozen=True)
class Phase:
    """The optimisation of one training phase of an experiment.

    The :class:`~jaxpref.train.TrainConfig` fields an experiment tunes per phase; the other
    fields come from the experiment or the engine's defaults
    (``TrainConfig(**dataclasses.asdict(phase), ...)``). A ``--set`` override may give a
    whole phase as a dict (``--set sft={'num_steps': 10, 'batch_size': 8, ...}``); configs
    convert it with ``Phase(**value)``.
    """

    num_steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int = 0
    schedule: str = "constant"


def save_plot(figure: Any, workdir: str | pathlib.Path, name: str) -> pathlib.Path:
    """Saves a matplotlib figure as ``workdir/name.png`` and closes it."""
    import matplotlib.pyplot as plt

    path = pathlib.Path(workdir) / f"{name}.png"
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A markdown table of ``rows`` (floats to 4 significant digits)."""
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())

    def fmt(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_report(
    workdir: str | pathlib.Path,
    *,
    title: str,
    results: Mapping[str, Any],
    body: str = "",
    plots: Sequence[str] = (),
) -> None:
    """Writes ``results.json`` and ``summary.md`` (title, body, the listed PNG plots)."""
    workdir = pathlib.Path(workdir)
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    parts = [f"# {title}", "", body.strip(), ""]
    parts += [f"![{name}]({name}.png)\n" for name in plots]
    (workdir / "summary.md").write_text("\n".join(parts).strip() + "\n")


def log_curves(
    workdir: str | pathlib.Path,
    curves: Mapping[str, Sequence[float]],
    *,
    steps: Mapping[str, Sequence[int]] | None = None,
    tensorboard: bool = True,
) -> None:
    """Writes per-step curves to ``workdir/metrics.jsonl`` and TensorBoard events.

    One :class:`~jaxpref.train.metric_logging.MetricLogger` record per step: the record of
    step ``s`` holds every curve that has a value at ``s``, so curves of different lengths
    share one file. A curve's steps are the positions of its values unless ``steps`` gives
    them (e.g. a curve recorded every 50 updates, or subsampled for the plot). The file is
    rewritten, not appended to: call this once per run, with all its curves. Names are
    limited to the characters TensorBoard keeps in a tag (letters, digits, ``_ . - /``), so
    that both files use the same name.

    Args:
      workdir: the run directory.
      curves: metric name (e.g. ``"egpo/beta_0.1/gap"``) -> ``[num_points]`` values.
      steps: metric name -> ``[num_points]`` step numbers, for the curves not indexed by
        position.
      tensorboard: also write TensorBoard events under ``workdir/tensorboard``.

    Example:
      >>> import tempfile
      >>> from jaxpref.train import read_metrics
      >>> with tempfile.TemporaryDirectory() as d:
      ...     log_curves(d, {"a/loss": [0.5, 0.25], "b/loss": [1.0]}, tensorboard=False)
      ...     read_metrics(d)
      [{'step': 0, 'a/loss': 0.5, 'b/loss': 1.0}, {'step': 1, 'a/loss': 0.25}]
    """
    steps = steps or {}
    unknown = set(steps) - set(curves)
    if unknown:
        raise ValueError(f"steps given for unknown curves {sorted(unknown)}")
    records: dict[int, dict[str, float]] = {}
    for name, values in curves.items():
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r}: use letters, digits and _ . - / only")
        values = np.asarray(values, np.float64)
        if values.ndim != 1:
            raise ValueError(f"curve {name!r} must be 1-D; got shape {values.shape}")
        at = np.asarray(steps.get(name, np.arange(len(values))))
        if at.shape != values.shape:
            raise ValueError(f"curve {name!r} has {len(values)} values but {at.size} steps")
        for step, value in zip(at.tolist(), values.tolist(), strict=True):
            records.setdefault(int(step), {})[name] = value
    with MetricLogger(workdir, tensorboard=tensorboard) as logger:
        for step in sorted(records):
            logger.write_scalars(step, records[step])


def main(
    default_config: Any,
    run: Callable[[Any, pathlib.Path], Mapping[str, Any]],
    *,
    argv: Sequence[str] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Parses ``--workdir/--small/--set``, runs the experiment, adds ``seconds``.

    ``default_config`` is a dataclass instance whose type has a ``small()`` classmethod.
    ``run`` must write its reports (e.g. with :func:`write_report`) and return the results;
    ``results.json`` is rewritten here with ``seconds`` added.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workdir", required=True, type=pathlib.Path)
    parser.add_argument("--small", action="store_true", help="the test-suite size")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    # force: importing the engine may already have given the root logger a handler (absl
    # does on its first message), which would make a plain basicConfig a no-op and keep the
    # scripts' INFO messages hidden.
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for noisy in QUIET_LOGGERS:  # their INFO messages are progress chatter (checkpoint saves)
        logging.getLogger(noisy).setLevel(logging.WARNING)
    maybe_initialize_distributed()
    config = type(default_config).small() if args.small else default_config
    config = apply_overrides(config, args.overrides)
    args.workdir.mkdir(parents=True, exist_ok=True)
    (args.workdir / "config.json").write_text(json.dumps(to_dict(config), indent=2) + "\n")
    start = time.perf_counter()
    results = dict(run(config, args.workdir))
    results["seconds"] = round(time.perf_counter() - start, 2)
    path = args.workdir / "results.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored.update(results)
    path.write_text(json.dumps(stored, indent=2, default=float) + "\n")
    print(json.dumps(stored, indent=2, default=float))
    return stored
