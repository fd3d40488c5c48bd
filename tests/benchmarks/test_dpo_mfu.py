"""The MFU benchmark runs at its CPU size and its FLOP count agrees with XLA's."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

import pytest

from jaxpref.models import TransformerConfig

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "dpo_mfu.py"


@pytest.fixture(scope="module")
def dpo_mfu():
    spec = importlib.util.spec_from_file_location("dpo_mfu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_model_flops_of_llama_1b_match_the_6n_rule(dpo_mfu):
    """Attention-free part equals 8 N per token (policy 6N, reference 2N), N = the 1.24B
    parameters minus the embedding table, plus the vocabulary projection of scored tokens."""
    config = TransformerConfig.llama3_2_1b()
    tokens, scored = 4096, 3000
    n_body = config.num_layers * (
        2 * config.d_model * config.num_heads * config.head_dim
        + 2 * config.d_model * config.num_kv_heads * config.head_dim
        + 3 * config.d_model * config.mlp_dim
    )
    assert 0.97e9 < n_body < 0.98e9  # 1.236B total minus 0.263B tied embedding/head
    flops = dpo_mfu.model_flops(config, seq=1, tokens=tokens, scored=scored)
    attention = 4 * (4 * config.num_layers * config.num_heads * config.head_dim * 1 * tokens)
    head = 4 * 2 * config.d_model * config.vocab_size * scored
    assert math.isclose(flops, 8 * n_body * tokens + attention + head, rel_tol=1e-12)


def test_small_run_reports_a_step_and_xla_agrees_on_the_flops(dpo_mfu, capsys):
    result = dpo_mfu.main(["--small", "--steps", "2", "--warmup", "0", "--peak-tflops", "2"])
    assert result["step_s"] > 0 and math.isfinite(result["loss"])
    assert math.isclose(result["mfu"], result["achieved_tflops"] / 2.0)
    # XLA also counts the recomputed logits of the chunked backward, the skipped prompt
    # chunks and elementwise work: more than the model count, but the same order.
    assert 0.5 < result["model_tflop_per_step"] / result["xla_tflop_per_step"] < 1.0
    assert "| step (s) |" in capsys.readouterr().out
    without_peak = dpo_mfu.peak_tflops("cpu")
    assert without_peak is None and dpo_mfu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
