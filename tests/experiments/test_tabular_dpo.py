"""The tabular DPO experiment runs through the shared command line and shows what its summary
claims."""

from __future__ import annotations

import pytest

from jaxpref.train import read_metrics

from .scripts import load_script, run_script


def test_small_config_through_the_command_line(tmp_path):
    results = run_script("tabular_dpo", tmp_path, "--small", timeout=300)
    assert results["seconds"] > 0 and (tmp_path / "config.json").exists()
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# Pairwise objectives on a tabular bandit")
    assert (tmp_path / "tabular_dpo.png").stat().st_size > 0 and "tabular_dpo.png" in summary
    base = results["reference_expected_reward"]
    objectives = results["objectives"]
    assert set(objectives) == {"dpo", "ipo", "robust_dpo", "hinge", "soft_preference"}
    dpo = objectives["dpo"]
    # DPO's optimum satisfies beta*log(pi/pi_ref) = r + const on the support of the data.
    assert dpo["implicit_reward_correlation"] > 0.95
    assert dpo["expected_reward"] > base + 0.5
    # IPO's bounded target keeps it closer to the reference than DPO.
    assert objectives["ipo"]["kl_from_reference"] < dpo["kl_from_reference"]
    # Every objective's loss per step, in metrics.jsonl and TensorBoard.
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(results["config"]["steps"]))
    assert all(f"{name}/loss" in r for r in records for name in objectives)
    assert records[-1]["dpo/loss"] == pytest.approx(dpo["final_loss"])
    assert any((tmp_path / "tensorboard").iterdir())


def test_overrides_and_refusals(tmp_path):
    tabular_dpo = load_script("tabular_dpo")
    from jaxpref.train import experiment

    argv = ["--workdir", str(tmp_path), "--small", "--set", "objectives=('dpo',)"]
    argv += ["--set", "steps=20"]
    results = experiment.main(tabular_dpo.Config(), tabular_dpo.run, argv=argv)
    assert list(results["objectives"]) == ["dpo"] and results["config"]["steps"] == 20
    with pytest.raises(ValueError, match="pairwise"):
        tabular_dpo.Config(objectives=("kto",))
    with pytest.raises(KeyError):
        tabular_dpo.Config(objectives=("no_such_objective",))
