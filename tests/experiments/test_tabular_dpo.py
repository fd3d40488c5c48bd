"""The README's main job runs end to end and shows the behaviour its summary claims."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_tabular_dpo_main_job(tmp_path):
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "experiments" / "tabular_dpo.py"),
            "--workdir",
            str(tmp_path),
            "--steps",
            "300",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "summary.md").read_text().startswith("Tabular bandit")
    base = results["reference_expected_reward"]
    dpo = results["objectives"]["dpo"]
    # DPO's optimum satisfies beta*log(pi/pi_ref) = r + const on the support of the data.
    assert dpo["implicit_reward_correlation"] > 0.95
    assert dpo["expected_reward"] > base + 0.5
    # IPO's bounded target keeps it closer to the reference than DPO.
    assert results["objectives"]["ipo"]["kl_from_reference"] < dpo["kl_from_reference"]
