"""Self-play objectives: SPPO and GPO regress log-ratios against the previous iterate.

Each response ``y ~ π_t`` gets a per-response square loss pulling
``log π_θ(y) - log π_t(y)`` towards a centred preference target divided by ``β``: the
estimated win rate minus ½ (SPPO), or the skew-symmetric GPM score (GPO). The previous
iterate ``π_t`` plays the role of the reference; its log-probs and the targets are constants
(stop-gradient). ``where`` masks responses and ``reduce_fn`` reduces (see
:mod:`jaxpref.types`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from jaxpref.losses._reduce import as_constant, as_float, as_mask, reduce_losses, sanitize
from jaxpref.types import Array, ArrayLike, Mask

ReduceArg = Callable[..., Any] | None


def _self_play_regression(
    policy_logps: ArrayLike,
    opponent_logps: ArrayLike,
    target: Array,
    beta: ArrayLike,
    where: Mask,
    reduce_fn: ReduceArg,
) -> Array:
    """``(log π_θ(y) - log π_t(y) - target/β)^2`` per response, π_t a constant."""
    lp = as_float(policy_logps, "policy_logps")
    lp_t = as_constant(opponent_logps, "opponent_logps")
    shape = jnp.broadcast_shapes(lp.shape, lp_t.shape, target.shape)
    mask = as_mask(where, shape)
    lp, lp_t, target = (sanitize(mask, jnp.broadcast_to(x, shape)) for x in (lp, lp_t, target))
    return reduce_losses(jnp.square(lp - lp_t - target / beta), where=mask, reduce_fn=reduce_fn)


def sppo(
    policy_logps: ArrayLike,
    opponent_logps: ArrayLike,
    win_rate: ArrayLike,
    *,
    beta: ArrayLike = 0.001,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Self-Play Preference Optimization: square loss to the centred win-rate target.

    .. math:: L(y) = \\Big(\\log\\pi_\\theta(y) - \\log\\pi_t(y)
              - \\frac{\\hat P(y \\succ \\pi_t) - 1/2}{\\beta}\\Big)^2

    per response (Wu et al., the SPPO objective, with ``η = 1/β``). Its exact minimiser is the
    multiplicative-weights step ``π_{t+1} ∝ π_t exp(η (P(·≻π_t) - ½))`` when the normaliser
    is 1, which the centring ``-½`` approximates. The official trainer
    (uclaml/SPPO ``loss_type="sppo"``) trains on the best/worst-scored pair of K samples with
    ``½[L(y_w) + L(y_l)]``: pass ``[..., 2]`` arrays and reduce with the mean to get it.
    ``P̂(y ≻ π_t)`` is the mean preference over the K samples, self included
    (:func:`empirical_win_rates`). With the default ``β = 0.001`` targets reach ±500 nats, so
    keep the computation in float32 (done here).

    Args:
      policy_logps: ``[...]`` policy log-probs of responses ``y ~ π_t``.
      opponent_logps: ``[...]`` log-probs under the previous iterate ``π_t`` (stop-gradient).
      win_rate: ``[...]`` estimated ``P̂(y ≻ π_t)`` in ``[0, 1]`` (stop-gradient).
      beta: ``1/η``; default 0.001 as the official scripts.
      where: ``[...]`` boolean response mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-response losses.

    Returns:
      The reduced loss, or ``[...]`` per-response losses.

    >>> import jax.numpy as jnp
    >>> float(sppo(jnp.array([-1.0]), jnp.array([-1.5]), jnp.array([1.0]), beta=1.0))
    0.0

    References:
      Wu et al., Self-Play Preference Optimization for Language Model Alignment, 2024,
      arXiv:2405.00675 (code: uclaml/SPPO, ``sppo/trainer.py``, ``scripts/compute_prob.py``).
    """
    target = as_constant(win_rate, "win_rate") - 0.5
    return _self_play_regression(policy_logps, opponent_logps, target, beta, where, reduce_fn)


def gpo(
    policy_logps: ArrayLike,
    opponent_logps: ArrayLike,
    score: ArrayLike,
    *,
    beta: ArrayLike = 0.001,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """General Preference Optimization: SPPO with the GPM score as the centred target.

    .. math:: L(y) = \\Big(\\log\\pi_\\theta(y) - \\log\\pi_t(y)
              - \\frac{s(y \\succ \\pi_t)}{\\beta}\\Big)^2, \\qquad
              s(y \\succ \\pi_t) = \\mathbb{E}_{y' \\sim \\pi_t}\\, s(y \\succ y')

    with ``s`` the skew-symmetric GPM score
    (:func:`jaxpref.losses.general_preference.general_preference_score`).
    ``s(π_t ≻ π_t) = 0`` plays the role of SPPO's ``P - ½``, so no centring is needed
    (Zhang et al., GPO). Estimate ``s(y ≻ π_t)`` from K samples with
    :func:`empirical_win_rates` on the ``[K, K]`` score table.

    Provenance: the target's form follows the paper's description; the released scripts
    (``compute_score_from_raw.py``) use ``(1/K) Σ_j (S_ij - S_ji)``, which for an exactly
    skew-symmetric GPM is ``2 s(y ≻ π_t)`` (pass twice the score to match), and clamp
    targets at a threshold in a trainer that is not public; neither is reproduced here.

    Args:
      policy_logps: ``[...]`` policy log-probs of responses ``y ~ π_t``.
      opponent_logps: ``[...]`` log-probs under the previous iterate ``π_t`` (stop-gradient).
      score: ``[...]`` ``s(y ≻ π_t)`` estimates (stop-gradient).
      beta: ``1/η``; default 0.001 as the released scripts.
      where: ``[...]`` boolean response mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-response losses.

    Returns:
      The reduced loss, or ``[...]`` per-response losses.

    >>> import jax.numpy as jnp
    >>> float(gpo(jnp.array([-1.0]), jnp.array([-1.5]), jnp.array([0.5]), beta=1.0))
    0.0

    References:
      Zhang et al., Beyond Bradley-Terry Models: A General Preference Model for Language Model
      Alignment, 2024, arXiv:2410.02197.
    """
    return _self_play_regression(
        policy_logps, opponent_logps, as_constant(score, "score"), beta, where, reduce_fn
    )


def empirical_win_rates(preferences: ArrayLike, *, opponent_where: Mask = None) -> Array:
    """Win rates of K sampled responses against the sampling policy: row means of a table.

    ``P̂(y_i ≻ π_t) = (1/K) Σ_j P(y_i ≻ y_j)`` over the K samples, self included
    (``P(i≻i) = ½``), as SPPO's ``compute_prob.py``; on a GPM score table it gives the GPO
    target ``s(y_i ≻ π_t)`` (self term 0). Masked opponents are left out of the mean.

    Args:
      preferences: ``[..., K, K]`` table, ``[..., i, j] = P(y_i ≻ y_j)`` (or ``s(y_i ≻ y_j)``).
      opponent_where: ``[..., K]`` boolean mask of valid samples ``j``, or None.

    Returns:
      ``[..., K]`` win rates (0 where no opponent is valid).

    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.5, 1.0], [0.0, 0.5]])
    >>> [float(x) for x in empirical_win_rates(p)]
    [0.75, 0.25]
    """
    p = as_float(preferences, "preferences")
    if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"preferences must have shape [..., K, K], got {p.shape}")
    if opponent_where is None:
        return jnp.mean(p, axis=-1)
    mask = as_mask(opponent_where, (*p.shape[:-2], p.shape[-1]), "opponent_where")
    mask = mask[..., None, :]
    total = jnp.sum(jnp.where(mask, p, 0.0), axis=-1)
    return total / jnp.maximum(jnp.sum(mask, axis=-1, dtype=p.dtype), 1.0)
