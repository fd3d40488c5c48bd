"""The experiment command line (its log messages are shown, libraries' chatter is not) and
the curves it logs to ``metrics.jsonl`` and TensorBoard."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxpref.train import read_metrics
from jaxpref.train.experiment import log_curves

from .test_logging import event_files, read_event_file, scalars


def test_info_messages_are_shown_even_when_a_library_configured_logging_first(tmp_path):
    # absl's first message installs a root handler, which would make a plain basicConfig a
    # no-op; a fresh interpreter makes the order of imports the one a script sees.
    script = textwrap.dedent(
        """
        import dataclasses, logging, sys
        from absl import logging as absl_logging
        absl_logging.warning("a library message before main()")
        from jaxpref.train.experiment import main

        @dataclasses.dataclass(frozen=True)
        class Config:
            size: int = 2

            @classmethod
            def small(cls):
                return cls(size=1)

        def run(config, workdir):
            logging.getLogger("recipe").info("recipe message size=%d", config.size)
            absl_logging.info("absl chatter")  # orbax logs its checkpoint saves this way
            logging.getLogger("orbax.checkpoint").info("orbax chatter")
            absl_logging.warning("absl warning")
            return {"size": config.size}

        main(Config(), run, argv=["--workdir", sys.argv[1], "--small"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "recipe message size=1" in out.stderr, out.stderr
    assert "absl warning" in out.stderr  # libraries' warnings still show, their INFO not
    assert "absl chatter" not in out.stderr and "orbax chatter" not in out.stderr
    assert (tmp_path / "results.json").exists()


def test_log_curves_writes_records_read_metrics_reads_back_and_tensorboard_events(tmp_path):
    loss = np.array([1.0, 0.5, 0.25, np.nan])
    gap = np.array([0.3, 0.1])
    log_curves(
        tmp_path,
        {"dpo/loss": loss, "egpo/beta_0.1/gap": gap, "egpo/beta_1/gap": [2.0, 1.0]},
        steps={"egpo/beta_0.1/gap": [0, 50]},
    )
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 50]  # one record per step, in order
    assert [r.get("dpo/loss") for r in records][:3] == [1.0, 0.5, 0.25]
    assert np.isnan(records[3]["dpo/loss"])  # non-finite values survive the round trip
    assert [r["egpo/beta_0.1/gap"] for r in records if "egpo/beta_0.1/gap" in r] == [0.3, 0.1]
    assert [r["step"] for r in records if "egpo/beta_1/gap" in r] == [0, 1]
    assert records[4] == {"step": 50, "egpo/beta_0.1/gap": 0.1}

    (events,) = event_files(tmp_path / "tensorboard")
    logged = scalars(read_event_file(events))
    assert ("egpo/beta_0.1/gap", 50, pytest.approx(0.1)) in logged
    assert sorted(step for tag, step, _ in logged if tag == "dpo/loss") == [0, 1, 2, 3]

    # A second call replaces the file: it holds the curves of one run.
    log_curves(tmp_path, {"dpo/loss": [0.125]}, tensorboard=False)
    assert read_metrics(tmp_path) == [{"step": 0, "dpo/loss": 0.125}]


def test_log_curves_refuses_malformed_curves(tmp_path):
    with pytest.raises(ValueError, match="1-D"):
        log_curves(tmp_path, {"a": np.zeros((2, 3))}, tensorboard=False)
    with pytest.raises(ValueError, match="2 values but 3 steps"):
        log_curves(tmp_path, {"a": [1.0, 2.0]}, steps={"a": [0, 1, 2]}, tensorboard=False)
    with pytest.raises(ValueError, match="letters, digits"):
        log_curves(tmp_path, {"egpo/beta=0.1/gap": [1.0]}, tensorboard=False)  # TB: beta_0.1
    with pytest.raises(ValueError, match="unknown curves"):
        log_curves(tmp_path, {"a": [1.0]}, steps={"b": [0]}, tensorboard=False)
