"""End-to-end runs of the engine: crash and resume, the NaN guard, logging files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from jaxpref.train.checkpointing import Checkpointer
from jaxpref.train.metric_logging import read_metrics

pytestmark = pytest.mark.slow

STEPS = 120


def command(workdir, *overrides):
    sets = [f"train.num_steps={STEPS}", "train.checkpoint_every=5", *overrides]
    args = [sys.executable, "-m", "jaxpref.train", "--workdir", str(workdir), "--no-progress"]
    for item in sets:
        args += ["--set", item]
    return args


def env():
    # One device: subprocesses do not inherit the test session's 8 fake devices by accident.
    return {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def summary(workdir):
    return json.loads((workdir / "summary.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    subprocess.run(command(workdir), check=True, env=env(), capture_output=True, timeout=600)
    return workdir


def test_uninterrupted_run_writes_its_files(uninterrupted):
    result = summary(uninterrupted)
    assert result["steps"] == STEPS
    rows = read_metrics(uninterrupted)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for key in ("loss", "grad_norm", "learning_rate", "rewards/margins", "accuracy", "tokens"):
        assert key in rows[-1], key
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns the synthetic preference
    assert any((uninterrupted / "tensorboard").iterdir())
    assert len(result["params_sha256"]) == 64


def test_sigkill_then_rerun_is_bit_identical(uninterrupted, tmp_path):
    kill_after = random.Random(os.getpid()).randint(7, 40)  # after >= 1 checkpoint
    process = subprocess.Popen(
        command(tmp_path), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            metrics = tmp_path / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after:
                break
            if process.poll() is not None:
                pytest.fail("the run ended before it could be killed")
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "summary.json").exists()
    latest = Checkpointer(tmp_path / "checkpoints").latest_step()
    assert latest is not None and 5 <= latest < STEPS

    subprocess.run(command(tmp_path), check=True, env=env(), capture_output=True, timeout=600)
    resumed = summary(tmp_path)
    assert resumed["resumed_from"] == latest
    assert resumed["params_sha256"] == summary(uninterrupted)["params_sha256"]
    steps = [r["step"] for r in read_metrics(tmp_path)]
    assert steps == list(range(1, STEPS + 1))  # no duplicated or missing lines


def test_nan_guard_stops_and_the_last_good_checkpoint_restores(tmp_path):
    poisoned = subprocess.run(
        command(tmp_path, "poison_step=12"), env=env(), capture_output=True, text=True, timeout=600
    )
    assert poisoned.returncode != 0
    assert "NonFiniteError" in poisoned.stderr
    assert "step 13" in poisoned.stderr and "loss" in poisoned.stderr
    ckpt = Checkpointer(tmp_path / "checkpoints")
    assert ckpt.latest_step() == 10  # the last checkpoint before the bad batch
    # Re-running without the fault resumes from it and finishes.
    subprocess.run(command(tmp_path), check=True, env=env(), capture_output=True, timeout=600)
    assert summary(tmp_path)["resumed_from"] == 10
    assert summary(tmp_path)["steps"] == STEPS


def test_resuming_with_a_different_objective_is_refused(uninterrupted, tmp_path):
    import shutil

    shutil.copytree(uninterrupted, tmp_path / "run")
    changed = subprocess.run(
        command(tmp_path / "run", f"train.num_steps={STEPS + 2}", "train.objective=ipo"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert changed.returncode != 0
    assert "ConfigMismatchError" in changed.stderr and "objective" in changed.stderr
    # Only num_steps changed: the run resumes and extends.
    subprocess.run(
        command(tmp_path / "run", f"train.num_steps={STEPS + 2}"),
        check=True,
        env=env(),
        capture_output=True,
        timeout=600,
    )
    assert summary(tmp_path / "run")["steps"] == STEPS + 2
