"""Reward signals computed from log-probs (no learned reward model needed)."""

from __future__ import annotations

import jax

from jaxpref.losses._reduce import as_float
from jaxpref.types import Array, ArrayLike

__all__ = ["density_ratio_reward", "preference_from_rewards"]


def density_ratio_reward(strong_logps: ArrayLike, weak_logps: ArrayLike) -> Array:
    """CDR / Dr.SoW reward: the log density ratio of a strong over a weak model.

    .. math:: r(x, y) = \\log\\pi_{strong}(y|x) - \\log\\pi_{weak}(y|x)

    (Xu et al., Eq. 2) from summed sequence log-probs of two frozen models, so the result is
    a constant (stop-gradient). "Customisable": condition the strong model on a criteria
    system prompt (and exemplars) when computing ``strong_logps``; e.g. the same model with
    and without the criteria prompt. Length-normalised log-probs may be passed instead; that
    variant is not from the paper.

    Args:
      strong_logps: ``[...]`` summed log-probs under the strong (better-aligned) model.
      weak_logps: ``[...]`` summed log-probs under the weak model.

    Returns:
      ``[...]`` rewards.

    >>> import jax.numpy as jnp
    >>> density_ratio_reward(jnp.array([-3.0]), jnp.array([-5.0])).tolist()
    [2.0]

    References:
      Xu et al., CDR: Customizable Density Ratios of Strong-over-weak LLMs for Preference
      Annotation (later titled Dr. SoW), 2024, arXiv:2411.02481.
    """
    strong = as_float(strong_logps, "strong_logps")
    weak = as_float(weak_logps, "weak_logps")
    return jax.lax.stop_gradient(strong - weak)


def preference_from_rewards(rewards_a: ArrayLike, rewards_b: ArrayLike) -> tuple[Array, Array]:
    """Labels pairs from rewards: ``a ≻ b`` iff ``r(a) > r(b)``; equal rewards are ties.

    Returns:
      ``(a_preferred, tie)``: boolean ``[...]`` arrays. Tied pairs carry no preference and
      should be skipped (and counted) or given a soft label of 0.5.

    >>> import jax.numpy as jnp
    >>> a, t = preference_from_rewards(jnp.array([1.0, 0.0, 2.0]), jnp.array([0.0, 1.0, 2.0]))
    >>> a.tolist(), t.tolist()
    ([True, False, False], [False, False, True])
    """
    ra = as_float(rewards_a, "rewards_a")
    rb = as_float(rewards_b, "rewards_b")
    return ra > rb, ra == rb
