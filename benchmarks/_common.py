"""What the benchmark scripts share: the machine's description, the benchmark model, batches."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np


def machine_description() -> str:
    """CPU model, core count, RAM and platform, for a benchmark's header."""
    cpu = platform.processor() or platform.machine()
    try:  # Linux: platform.processor() is often empty; the model name is in /proc/cpuinfo
        with open("/proc/cpuinfo") as cpuinfo:
            names = [line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        ram = f", {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        ram = ""
    return f"{cpu}, {os.cpu_count()} CPUs{ram}, {platform.platform()}"


def model_config(cfg: dict, **overrides: Any):
    """The benchmarks' Llama (no GQA) from a size dict (``layers``, ``d_model``, ``mlp``, ...)."""
    from jaxpref import models

    fields = dict(
        vocab_size=cfg["vocab"],
        d_model=cfg["d_model"],
        num_layers=cfg["layers"],
        num_heads=cfg["heads"],
        num_kv_heads=cfg["heads"],
        mlp_dim=cfg["mlp"],
        max_position_embeddings=max(2048, cfg["prompt"] + cfg["response"]),
    )
    return models.TransformerConfig(**{**fields, **overrides})


def random_item_batch(
    vocab: int, examples: int, items: int, prompt: int, response: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """``items`` responses per example after one shared prompt; no padding.

    Targets are the next tokens (already shifted) and ``loss_mask`` covers exactly the
    response targets: ``prompt - 1`` unscored positions, then ``response``, then the last
    position (no next token), unscored.
    """
    t = prompt + response
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (examples, items, t)).astype(np.int32)
    ids[:, :, :prompt] = ids[:, :1, :prompt]  # one prompt per example
    targets = np.concatenate([ids[..., 1:], np.zeros((examples, items, 1), np.int32)], -1)
    loss_mask = np.broadcast_to(np.arange(t) >= prompt - 1, ids.shape).copy()
    loss_mask[..., -1] = False
    return {
        "input_ids": ids,
        "targets": targets,
        "loss_mask": loss_mask,
        "attention_mask": np.ones(ids.shape, bool),
        "positions": np.broadcast_to(np.arange(t), ids.shape).astype(np.int32),
        "example_mask": np.ones(examples, bool),
    }
