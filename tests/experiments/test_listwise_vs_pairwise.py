"""The listwise-vs-pairwise comparison runs every arm on the same data and improves the score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxpref.tasks import arithmetic, judged
from jaxpref.train.metric_logging import read_metrics

from .scripts import load_script, run_script

ARMS = ("dpo_best_vs_worst", "dpo_all_pairs", "plackett_luce", "lipo_lambda", "pro")

pytestmark = pytest.mark.slow


def test_small_config_every_objective_scored_on_the_same_data(tmp_path):
    results = run_script("listwise_vs_pairwise", tmp_path, "--small")
    scores, before = results["judge_score"], results["judge_score_before"]
    assert set(scores) == set(ARMS) == set(results["train_seconds"]) - {"sft"}
    assert all(0 <= s <= 100 for s in [before, *scores.values()])
    assert results["best"] == max(scores, key=scores.get)
    # The same judged samples for all: one list or one best-vs-worst pair per untied prompt,
    # and more pairs than prompts when all pairs are taken.
    examples = results["examples"]
    assert examples["dpo_best_vs_worst"] == examples["plackett_luce"] == examples["pro"]
    assert examples["dpo_best_vs_worst"] == results["samples"]["examples"] > 0
    assert examples["dpo_all_pairs"] > examples["dpo_best_vs_worst"]
    # Observed with seeds 0 and 1: the warm-up scores 33 and 49, every arm 74-90. Asserted: the
    # best arm gains 20 points and every arm at least 5.
    assert max(scores.values()) >= before + 20, results
    assert min(scores.values()) >= before + 5, results

    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# Listwise vs pairwise")
    for name in ("scores.png", "training_curves.png"):
        assert name in summary and (tmp_path / name).stat().st_size > 0
    steps = json.loads((tmp_path / "config.json").read_text())["base"]["preference"]["num_steps"]
    for arm in ARMS:
        assert (tmp_path / "arms" / arm / "checkpoints").is_dir()
        assert len(read_metrics(tmp_path / "arms" / arm)) == steps


def test_all_pairs_takes_every_pair_with_different_credit():
    module = load_script("listwise_vs_pairwise")
    task = arithmetic.Addition()
    problems = np.array([[7, 45], [10, 10]])  # answers 052 and 020, written 250 and 020
    texts = [["250", "350", "240"], ["020", "020", "020"]]
    tokens = np.array(
        [[[*arithmetic.encode(t), arithmetic.EOS] for t in row] for row in texts], np.int32
    )
    mask = np.ones(tokens.shape, bool)
    samples = judged.Samples(problems, tokens, mask, task.judge(problems, tokens, mask))
    examples, stats = module.all_pairs(task, samples)
    # Credits 1, 3/4, 3/4 give two pairs (the tied pair gives none); the all-tied prompt none.
    assert [ex.features["scores"] for ex in examples] == [(1.0, 0.75), (1.0, 0.75)]
    chosen = {arithmetic.decode(ex.input_ids[0]) for ex in examples}
    rejected = {arithmetic.decode(ex.input_ids[1]) for ex in examples}
    assert chosen == {"07+45=250"} and rejected == {"07+45=350", "07+45=240"}
    assert (stats.prompts, stats.examples, stats.ties, stats.all_correct) == (2, 1, 1, 1)


def test_config_checks():
    module = load_script("listwise_vs_pairwise")
    assert module.Config().base.rounds == 1
    with pytest.raises(ValueError, match="rounds"):
        module.Config(base=module.quickstart.Config(rounds=2))
    bad = {"x": {"objective": "plackett_luce", "options": {}, "data": "all_pairs"}}
    with pytest.raises(ValueError, match="pairwise objective"):
        module.Config(arms=bad)
    with pytest.raises(ValueError, match="one of"):
        module.Config(arms={"x": {"objective": "dpo", "data": "triples"}})
