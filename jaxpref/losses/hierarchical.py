"""Hierarchical pairwise preference loss over graded negatives (VideoComp)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpref.losses._reduce import as_float, as_mask, reduce_losses, sanitize
from jaxpref.types import Array, ArrayLike, Mask

PAIR_SETS = ("all", "adjacent")


def _level_pairs(num_levels: int, pairs: str) -> tuple[np.ndarray, np.ndarray]:
    if pairs == "all":
        better, worse = np.triu_indices(num_levels, k=1)
    elif pairs == "adjacent":
        better = np.arange(num_levels - 1)
        worse = better + 1
    else:
        raise ValueError(f"pairs must be one of {PAIR_SETS}, got {pairs!r}")
    return better, worse


def hierarchical_pairwise(
    scores: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    margin: ArrayLike = 0.0,
    pairs: str = "all",
    level_where: Mask = None,
    where: Mask = None,
    reduce_fn: Callable[..., Any] | None = jnp.mean,
) -> Array:
    """Pairwise logistic loss over responses graded by how disrupted they are.

    ``scores[..., 0]`` scores the positive and ``scores[..., l]`` the negative at disruption
    level ``l = 1..L`` (higher = more disrupted: reordered, action words replaced, partial,
    combined). Every pair of levels ``l < l'`` (or adjacent levels only) contributes

    .. math:: \\ell_{l,l'} = -\\log\\sigma\\Big(\\frac{s_l - s_{l'}}{\\tau} - m\\,(l' - l)\\Big)

    so less disrupted responses must beat more disrupted ones, with a margin growing with the
    level gap: alignment with the accurate response is strengthened and increasingly
    disrupted ones are penalised progressively. The per-example loss is the mean over its
    valid level pairs; an example with no valid pair contributes nothing.

    Provenance: the VideoComp paper (arXiv:2504.03970) describes this loss in words
    ("strengthens alignment with temporally accurate pairs and gradually penalizes
    increasingly disrupted ones"); its released code has no training loss, and the equation
    of its method section could not be retrieved here. The form above (logistic pairs,
    temperature ``τ``, margin linear in the level gap) is our reading; with ``margin=0`` and
    ``pairs="all"`` it is the RankNet loss over the level order.

    Args:
      scores: ``[..., L + 1]`` scores, level 0 the positive.
      temperature: ``τ > 0``.
      margin: margin per level of gap ``m`` (>= 0).
      pairs: ``"all"`` level pairs or ``"adjacent"`` levels only.
      level_where: ``[..., L + 1]`` boolean mask of present levels.
      where: ``[...]`` boolean example mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-example losses ``[...]``.

    Returns:
      The reduced loss, or ``[...]`` per-example losses.

    >>> import jax.numpy as jnp
    >>> loss = hierarchical_pairwise(jnp.array([[0.0, 0.0, 0.0]]))
    >>> round(float(loss), 4)
    0.6931

    References:
      VideoComp: Advancing Fine-Grained Compositional and Temporal Alignment in Video-Text
      Models, 2025, arXiv:2504.03970.
    """
    s = as_float(scores, "scores")
    if s.ndim < 1 or s.shape[-1] < 2:
        raise ValueError(f"scores must have shape [..., L + 1] with L >= 1, got {s.shape}")
    batch_shape = s.shape[:-1]
    example_mask = as_mask(where, batch_shape)
    level_mask = as_mask(level_where, s.shape, "level_where")
    valid = jnp.ones(s.shape, bool) if level_mask is None else level_mask
    if example_mask is not None:
        valid = valid & example_mask[..., None]
    s = jnp.where(valid, s, 0.0)
    better, worse = _level_pairs(s.shape[-1], pairs)
    gap = jnp.asarray(worse - better, s.dtype)
    logits = (s[..., better] - s[..., worse]) / temperature - margin * gap
    pair_valid = valid[..., better] & valid[..., worse]
    pair_losses = jnp.where(pair_valid, jax.nn.softplus(-logits), 0.0)
    count = jnp.sum(pair_valid, axis=-1)
    per_example = jnp.sum(pair_losses, axis=-1) / jnp.maximum(count, 1)
    has_pair = count > 0
    example_valid = has_pair if example_mask is None else has_pair & example_mask
    return reduce_losses(
        sanitize(example_valid, per_example), where=example_valid, reduce_fn=reduce_fn
    )
