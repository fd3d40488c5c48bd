"""Input generators shared by the objective tests (batch axes lead, scale = magnitude)."""

from __future__ import annotations

import numpy as np


def normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def logps(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Negative log-prob-like values of magnitude ``scale``."""
    return (-scale * np.abs(rng.standard_normal(shape)) - 0.01).astype(np.float32)
