"""Random token batches in the engine's ``[examples, items, time]`` layout, for benchmarks."""

from __future__ import annotations

import numpy as np


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
