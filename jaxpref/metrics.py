"""Preference metrics: implicit rewards, margins, accuracies and preference strength.

All metrics are detached (stop-gradient), computed in float32, and accept ``where`` masks
over examples; a fully masked batch gives 0, never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpref.losses._reduce import (
    as_float,
    as_mask,
    check_static_range,
    reduce_losses,
    sanitize,
)
from jaxpref.types import Array, ArrayLike, Mask

__all__ = [
    "dpo_reward_metrics",
    "idealized_ranking_accuracy",
    "implicit_rewards",
    "preference_strength",
    "ranking_accuracy",
    "reward_accuracy",
]


def implicit_rewards(
    policy_logps: ArrayLike, reference_logps: ArrayLike, *, beta: ArrayLike = 0.1
) -> Array:
    """DPO's implicit reward ``β (log π_θ(y|x) - log π_ref(y|x))``, detached.

    Args:
      policy_logps: ``[...]`` summed policy log-probs.
      reference_logps: ``[...]`` summed reference log-probs.
      beta: the objective's ``β``.

    Returns:
      ``[...]`` rewards.

    >>> import jax.numpy as jnp
    >>> implicit_rewards(jnp.array([-1.0]), jnp.array([-2.0]), beta=0.5).tolist()
    [0.5]
    """
    p = as_float(policy_logps, "policy_logps")
    r = as_float(reference_logps, "reference_logps")
    return jax.lax.stop_gradient(beta * (p - r))


def _fraction_greater(a: Array, b: Array, where: Mask) -> Array:
    shape = jnp.broadcast_shapes(a.shape, b.shape)
    mask = as_mask(where, shape)
    a, b = (sanitize(mask, jnp.broadcast_to(x, shape)) for x in (a, b))
    hits = (a > b).astype(jnp.float32)
    return jax.lax.stop_gradient(reduce_losses(hits, where=mask, reduce_fn=jnp.mean))


def reward_accuracy(
    chosen_rewards: ArrayLike, rejected_rewards: ArrayLike, *, where: Mask = None
) -> Array:
    """Fraction of pairs whose chosen reward is strictly greater (ties count as wrong).

    >>> import jax.numpy as jnp
    >>> float(reward_accuracy(jnp.array([1.0, 0.0]), jnp.array([0.0, 0.0])))
    0.5
    """
    return _fraction_greater(
        as_float(chosen_rewards, "chosen_rewards"),
        as_float(rejected_rewards, "rejected_rewards"),
        where,
    )


def dpo_reward_metrics(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike,
    reference_rejected_logps: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
) -> dict[str, Array]:
    """Implicit-reward metrics of a DPO-style batch, averaged over unmasked pairs.

    Returns:
      ``rewards/chosen``, ``rewards/rejected``: mean implicit rewards;
      ``rewards/margins``: mean ``r_w - r_l``; ``rewards/accuracies``: fraction with
      ``r_w > r_l``. All scalars, detached.

    >>> import jax.numpy as jnp
    >>> m = dpo_reward_metrics(jnp.array([-1.0]), jnp.array([-3.0]),
    ...                        jnp.array([-2.0]), jnp.array([-2.0]), beta=1.0)
    >>> float(m["rewards/margins"]), float(m["rewards/accuracies"])
    (2.0, 1.0)
    """
    rw = implicit_rewards(policy_chosen_logps, reference_chosen_logps, beta=beta)
    rl = implicit_rewards(policy_rejected_logps, reference_rejected_logps, beta=beta)
    shape = jnp.broadcast_shapes(rw.shape, rl.shape)
    mask = as_mask(where, shape)
    rw, rl = (sanitize(mask, jnp.broadcast_to(x, shape)) for x in (rw, rl))

    def mean(x: Array) -> Array:
        return reduce_losses(x, where=mask, reduce_fn=jnp.mean)

    return {
        "rewards/chosen": mean(rw),
        "rewards/rejected": mean(rl),
        "rewards/margins": mean(rw - rl),
        "rewards/accuracies": _fraction_greater(rw, rl, mask),
    }


def ranking_accuracy(
    chosen_logps: ArrayLike, rejected_logps: ArrayLike, *, where: Mask = None
) -> Array:
    """Ranking accuracy: the fraction of pairs with ``log π(y_w|x) > log π(y_l|x)``.

    Uses summed sequence log-probs (the model's likelihood of each full response), as
    Chen et al. (2024, Sec. 2) define it.

    Args:
      chosen_logps: ``[...]`` summed log-probs of the preferred responses.
      rejected_logps: ``[...]`` summed log-probs of the dispreferred responses.
      where: ``[...]`` boolean pair mask.

    Returns:
      A scalar in ``[0, 1]``.

    >>> import jax.numpy as jnp
    >>> float(ranking_accuracy(jnp.array([-1.0, -5.0]), jnp.array([-2.0, -4.0])))
    0.5

    References:
      Chen et al., Preference Learning Algorithms Do Not Learn Preference Rankings, 2024,
      arXiv:2405.19534.
    """
    return _fraction_greater(
        as_float(chosen_logps, "chosen_logps"), as_float(rejected_logps, "rejected_logps"), where
    )


def idealized_ranking_accuracy(
    reference_chosen_logps: ArrayLike,
    reference_rejected_logps: ArrayLike,
    preference_probability: ArrayLike,
    *,
    beta: ArrayLike,
    where: Mask = None,
) -> Array:
    """Ranking accuracy of the exact optimum of the KL-regularised (DPO/RLHF) objective.

    The optimum ``π*(y|x) ∝ π_ref(y|x) exp(r*(x, y)/β)`` under a Bradley-Terry ground truth
    with ``P(y_w ≻ y_l) = α`` ranks a pair correctly iff

    .. math:: \\log\\pi_{ref}(y_w) - \\log\\pi_{ref}(y_l)
              + \\frac{1}{\\beta}\\log\\frac{\\alpha}{1-\\alpha} > 0

    (Chen et al., Theorem 3.1). ``α = 1`` counts as correct, ``α = 0`` as wrong, and at
    ``α = 0.5`` the reference decides (a reference tie counts as wrong).

    Args:
      reference_chosen_logps: ``[...]`` summed reference log-probs of ``y_w``.
      reference_rejected_logps: ``[...]`` summed reference log-probs of ``y_l``.
      preference_probability: ``[...]`` ``α`` in ``[0, 1]``, e.g. the fraction of raters who
        preferred ``y_w``.
      beta: the objective's ``β``.
      where: ``[...]`` boolean pair mask.

    Returns:
      A scalar in ``[0, 1]``.

    >>> import jax.numpy as jnp
    >>> float(idealized_ranking_accuracy(jnp.array([-5.0, -5.0]), jnp.array([-4.0, -4.0]),
    ...                                  jnp.array([0.9, 0.5]), beta=0.1))
    0.5

    References:
      Chen et al., Preference Learning Algorithms Do Not Learn Preference Rankings, 2024,
      arXiv:2405.19534.
    """
    rc = as_float(reference_chosen_logps, "reference_chosen_logps")
    rr = as_float(reference_rejected_logps, "reference_rejected_logps")
    alpha = as_float(preference_probability, "preference_probability")
    shape = jnp.broadcast_shapes(rc.shape, rr.shape, alpha.shape)
    mask = as_mask(where, shape)
    rc, rr = (sanitize(mask, jnp.broadcast_to(x, shape)) for x in (rc, rr))
    alpha = sanitize(mask, jnp.broadcast_to(alpha, shape), fill=0.5)
    check_static_range(alpha, "preference_probability", low=0.0, high=1.0)
    log_odds = jnp.log(alpha) - jnp.log(1.0 - alpha)  # exactly 0 at α = 0.5; ±inf at 0, 1
    score = jnp.where(alpha >= 1.0, jnp.inf, jnp.where(alpha <= 0.0, -jnp.inf, log_odds / beta))
    return _fraction_greater((rc - rr) + score, jnp.zeros(shape, rc.dtype), mask)


def preference_strength(
    reward_differences: ArrayLike, *, axis: int = 0, where: Mask = None
) -> tuple[Array, Array]:
    """Preference strength from a reward-model ensemble: mean and std over the ensemble.

    For pair ``i`` and ensemble member ``m``, ``d_{i,m} = r_m(x_i, y_c) - r_m(x_i, y_r)``;

    .. math:: \\hat\\mu_i = \\frac{1}{M}\\sum_m d_{i,m},\\qquad
              \\hat\\sigma_i = \\sqrt{\\frac{1}{M}\\sum_m (d_{i,m} - \\hat\\mu_i)^2}

    (Wang et al., Eq. 4: the population std, divisor ``M``). Low or negative ``μ̂`` flags
    likely mislabelled or ambiguous pairs (see :mod:`jaxpref.losses.reward_modeling`).

    Args:
      reward_differences: ``[M, ...]`` chosen-minus-rejected rewards, ensemble on ``axis``.
      axis: the ensemble axis.
      where: optional boolean mask over ensemble members, broadcastable to the input.

    Returns:
      ``(mean, std)``, each with the ensemble axis removed, detached.

    >>> import jax.numpy as jnp
    >>> mu, sd = preference_strength(jnp.array([[1.0, -1.0], [3.0, -1.0]]))
    >>> mu.tolist(), sd.tolist()
    ([2.0, -1.0], [1.0, 0.0])

    References:
      Wang et al., Secrets of RLHF in Large Language Models Part II: Reward Modeling, 2024,
      arXiv:2401.06080.
    """
    d = jax.lax.stop_gradient(as_float(reward_differences, "reward_differences"))
    if where is None:
        return jnp.mean(d, axis=axis), jnp.std(d, axis=axis)
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"where must be a boolean mask, got dtype {where.dtype}")
    mask = jnp.broadcast_to(where, d.shape)
    d = jnp.where(mask, d, 0.0)
    count = jnp.maximum(jnp.sum(mask, axis=axis, dtype=d.dtype), 1)
    mean = jnp.sum(d, axis=axis) / count
    dev = jnp.where(mask, d - jnp.expand_dims(mean, axis), 0.0)
    return mean, jnp.sqrt(jnp.sum(dev * dev, axis=axis) / count)
