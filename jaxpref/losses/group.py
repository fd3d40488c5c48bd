"""Group / RL objectives: group advantages and the clipped token-level policy surrogate.

Group advantages (GRPO, Dr.GRPO, RLOO, Pref-GRPO) take a group of ``G`` sampled responses
per prompt on the last axis, ``[..., G]``. ``where`` masks members (unscorable or padding):
a masked member gets advantage 0 and is excluded from the others' baselines. Advantages are
constants (``stop_gradient``) computed in float32.

:func:`clipped_surrogate` is the PPO/GRPO clipped objective on per-token log-probs
``[..., T]`` with the k3 KL estimator. It takes the advantages and is a loss (minimise it).
:func:`surrogate_metrics` reports the clip fractions, the KL and the mean ratio for
logging.

>>> import jax.numpy as jnp
>>> rewards = jnp.array([[1.0, 0.0, 0.0, 1.0]])
>>> [round(a, 3) for a in grpo_advantages(rewards)[0].tolist()]
[0.866, -0.866, -0.866, 0.866]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpref.losses._reduce import (
    as_float,
    as_mask,
    check_static_range,
    is_traced,
    reduce_losses,
    sanitize,
)
from jaxpref.losses.listwise import _array, _kernel
from jaxpref.types import Array, ArrayLike, Mask

ReduceArg = Callable[..., Any] | None

#: Normalisations of :func:`clipped_surrogate`.
NORMALIZATIONS = ("sequence", "token", "constant")


def _group_inputs(rewards: ArrayLike, where: Mask, name: str) -> tuple[Array, Array, Array]:
    r = jax.lax.stop_gradient(as_float(rewards, name))
    if r.ndim < 1:
        raise ValueError(f"{name} must have shape [..., group], got {r.shape}")
    valid = as_mask(where, r.shape)
    valid = jnp.ones(r.shape, bool) if valid is None else valid
    return sanitize(valid, r), valid, jnp.sum(valid, axis=-1, keepdims=True)


def grpo_advantages(
    rewards: ArrayLike,
    *,
    scale_by_std: bool = True,
    epsilon: ArrayLike = 1e-4,
    ddof: int = 1,
    where: Mask = None,
) -> Array:
    """GRPO group-normalised advantages; ``scale_by_std=False`` is the Dr.GRPO form.

    .. math:: \\hat A_i = \\frac{r_i - \\mathrm{mean}(r)}{\\mathrm{std}(r) + \\varepsilon}

    over the valid members of each group (Shao et al., outcome supervision),
    broadcast to every token of response ``i`` by :func:`clipped_surrogate`. The ``ε``
    guard makes a group of equal rewards (std 0) give advantage 0 instead of 0/0. ``std``
    uses ``ddof=1`` (``torch.std``) and ``ε = 1e-4`` as in TRL's ``GRPOTrainer`` (checked
    in copies of ``trl/trainer/grpo_trainer.py`` in the code index). That trainer computes
    ``(r - mean) / (std + 1e-4)`` and skips the division when ``scale_rewards`` is off.
    Dr.GRPO (Liu et al.) drops the std division: ``Â_i = r_i - mean(r)``.

    Args:
      rewards: ``[..., G]`` rewards of the group members.
      scale_by_std: divide by the group std (GRPO) or not (Dr.GRPO).
      epsilon: added to the std.
      ddof: delta degrees of freedom of the std (1: unbiased, 0: population).
      where: ``[..., G]`` boolean mask of scorable members.

    Returns:
      ``[..., G]`` advantages (0 at masked members), stop-gradient.

    References:
      Shao et al., DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open
      Language Models, 2024, arXiv:2402.03300.
      Liu et al., Understanding R1-Zero-Like Training: A Critical Perspective, 2025,
      arXiv:2503.20783.
    """
    return _grpo(_array(rewards), _array(where), _array(epsilon), scale=scale_by_std, ddof=ddof)


@_kernel(static_argnames=("scale", "ddof"))
def _grpo(rewards, where, epsilon, *, scale, ddof):
    r, valid, n = _group_inputs(rewards, where, "rewards")
    mean = jnp.sum(r, axis=-1, keepdims=True) / jnp.maximum(n, 1)
    centred = jnp.where(valid, r - mean, 0.0)
    if scale:
        var = jnp.sum(jnp.square(centred), axis=-1, keepdims=True) / jnp.maximum(n - ddof, 1)
        centred = centred / (jnp.sqrt(var) + epsilon)
    return jax.lax.stop_gradient(jnp.where(valid, centred, 0.0))


def rloo_advantages(rewards: ArrayLike, *, where: Mask = None) -> Array:
    """REINFORCE leave-one-out advantages: each reward minus the mean of the others.

    .. math::
        A_i = r_i - \\frac{1}{n-1}\\sum_{j \\ne i} r_j = \\frac{n}{n-1}\\,(r_i - \\bar r)

    over the ``n`` valid members (Kool et al.; Ahmadian et al.). As in TRL's RLOO
    trainer (baseline ``(group_sum - r_i) / (count - 1)``), masked members get 0 and are
    excluded from the sums. A group with fewer than two valid members has no baseline and
    gives 0.

    Args:
      rewards: ``[..., G]`` rewards of the group members.
      where: ``[..., G]`` boolean mask of scorable members.

    Returns:
      ``[..., G]`` advantages, stop-gradient.

    >>> import jax.numpy as jnp
    >>> rloo_advantages(jnp.array([3.0, 1.0, 2.0])).tolist()
    [1.5, -1.5, 0.0]

    References:
      Kool et al., Buy 4 REINFORCE Samples, Get a Baseline for Free!, ICLR workshop 2019.
      Ahmadian et al., Back to Basics: Revisiting REINFORCE Style Optimization for
      Learning from Human Feedback in LLMs, 2024, arXiv:2402.14740.
    """
    return _rloo(_array(rewards), _array(where))


@_kernel()
def _rloo(rewards, where):
    r, valid, n = _group_inputs(rewards, where, "rewards")
    baseline = (jnp.sum(r, axis=-1, keepdims=True) - r) / jnp.maximum(n - 1, 1)
    return jax.lax.stop_gradient(jnp.where(valid & (n >= 2), r - baseline, 0.0))


def preference_win_rates(preferences: ArrayLike, *, hard: bool = True, where: Mask = None) -> Array:
    """Within-group win rates from a pairwise preference matrix ``P[..., i, j] = P(i ≻ j)``.

    .. math:: w_i = \\frac{1}{n-1}\\sum_{j \\ne i,\\ j\\ \\mathrm{valid}} W_{ij}

    Hard: ``W_ij = 1`` if ``P_ij > 0.5``, 0 if ``P_ij < 0.5``, and 0.5 for a tie. Soft:
    ``W_ij = P_ij``. The diagonal (self-comparison) is excluded. The hard form follows the
    official Pref-GRPO code, CodeGoat24/Pref-GRPO ``fastvideo/train_flux_pref_grpo.py::
    cal_win_rate``. There every unordered pair of the group is judged once, the winner
    scores 1, an undecided judgement gives 0.5 to each, and a member's reward is its wins
    divided by its comparisons. The soft form is our extension for a probabilistic judge.
    Pass a matrix whose lower triangle is ``1 - upper`` to mirror one judgement per pair.

    Args:
      preferences: ``[..., G, G]`` judged probabilities that row beats column.
      hard: count wins (True) or sum probabilities (False).
      where: ``[..., G]`` boolean mask of valid members.

    Returns:
      ``[..., G]`` win rates in ``[0, 1]`` (0 at masked members), stop-gradient.

    >>> import jax.numpy as jnp
    >>> p = jnp.array([[0.5, 0.9, 0.6], [0.1, 0.5, 0.5], [0.4, 0.5, 0.5]])
    >>> preference_win_rates(p).tolist()
    [1.0, 0.25, 0.25]

    References:
      Wang et al., Pref-GRPO: Pairwise Preference Reward-based GRPO for Stable
      Text-to-Image Reinforcement Learning, 2025, arXiv:2508.20751.
    """
    shape = jnp.shape(preferences)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"preferences must have shape [..., G, G], got {shape}")
    return _win_rates(_array(preferences), _array(where), hard=hard)


@_kernel(static_argnames=("hard",))
def _win_rates(preferences, where, *, hard):
    p = jax.lax.stop_gradient(as_float(preferences, "preferences"))
    valid = as_mask(where, p.shape[:-1])
    valid = jnp.ones(p.shape[:-1], bool) if valid is None else valid
    n = jnp.sum(valid, axis=-1)
    pair = valid[..., :, None] & valid[..., None, :] & ~jnp.eye(p.shape[-1], dtype=bool)
    p = jnp.where(pair, p, 0.5)
    wins = jnp.where(p > 0.5, 1.0, jnp.where(p < 0.5, 0.0, 0.5)) if hard else p
    rate = jnp.sum(jnp.where(pair, wins, 0.0), axis=-1) / jnp.maximum(n - 1, 1)[..., None]
    return jnp.where(valid & (n >= 2)[..., None], rate, 0.0)


def pref_grpo_advantages(
    preferences: ArrayLike,
    *,
    hard: bool = True,
    scale_by_std: bool = True,
    epsilon: ArrayLike = 1e-8,
    ddof: int = 1,
    where: Mask = None,
) -> Array:
    """Pref-GRPO advantages: within-group win rates, then GRPO group normalisation.

    ``grpo_advantages(preference_win_rates(P))``. The official code normalises with
    ``(w - mean) / (std + 1e-8)`` and ``torch.std`` (``ddof=1``), hence these defaults
    (CodeGoat24/Pref-GRPO ``train_flux_pref_grpo.py::train_one_step``). A group where
    every judgement is a tie has equal win rates and gets advantage 0. Win rates replace
    pointwise scores, whose tiny differences the normalisation would amplify into
    "illusory advantages".

    Args:
      preferences: ``[..., G, G]`` judged probabilities that row beats column.
      hard: hard (counted) or soft (probability) wins, see :func:`preference_win_rates`.
      scale_by_std: divide by the group std.
      epsilon: added to the std.
      ddof: delta degrees of freedom of the std.
      where: ``[..., G]`` boolean mask of valid members.

    Returns:
      ``[..., G]`` advantages (0 at masked members), stop-gradient.

    References:
      Wang et al., Pref-GRPO: Pairwise Preference Reward-based GRPO for Stable
      Text-to-Image Reinforcement Learning, 2025, arXiv:2508.20751.
    """
    rates = preference_win_rates(preferences, hard=hard, where=where)
    valid = None if where is None else as_mask(where, rates.shape)
    return grpo_advantages(
        rates, scale_by_std=scale_by_std, epsilon=epsilon, ddof=ddof, where=valid
    )


def _surrogate_inputs(logps, old_logps, ref_logps, advantages, token_where, where):
    lp = as_float(logps, "logps")
    if lp.ndim < 1:
        raise ValueError(f"logps must have shape [..., time], got {lp.shape}")
    old = lp if old_logps is None else as_float(old_logps, "old_logps")
    old = jax.lax.stop_gradient(old)
    ref = None if ref_logps is None else jax.lax.stop_gradient(as_float(ref_logps, "ref_logps"))
    adv = jax.lax.stop_gradient(as_float(advantages, "advantages"))
    if adv.ndim < lp.ndim:
        adv = adv[..., None]  # one advantage per sequence, broadcast over its tokens
    shapes = [lp.shape, old.shape, adv.shape] + ([] if ref is None else [ref.shape])
    shape = jnp.broadcast_shapes(*shapes)
    tokens = as_mask(token_where, shape, "token_where")
    tokens = jnp.ones(shape, bool) if tokens is None else tokens
    seqs = as_mask(where, shape[:-1])
    if seqs is not None:
        tokens = tokens & seqs[..., None]
    lp, old, adv = (sanitize(tokens, jnp.broadcast_to(a, shape)) for a in (lp, old, adv))
    if ref is not None:
        ref = sanitize(tokens, jnp.broadcast_to(ref, shape))
    return lp, old, ref, adv, tokens


def _clip_log(x: Array, limit: Array | None) -> Array:
    return x if limit is None else jnp.clip(x, -limit, limit)


def clipped_surrogate(
    logps: ArrayLike,
    old_logps: ArrayLike | None,
    ref_logps: ArrayLike | None,
    advantages: ArrayLike,
    *,
    token_where: Mask = None,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    beta: ArrayLike = 0.04,
    normalization: str = "sequence",
    log_ratio_limit: float | None = 20.0,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """The clipped token-level policy-gradient loss with the k3 KL penalty (GRPO / PPO).

    Per token, with ``ρ = π_θ / π_old`` and ``d = log π_ref - log π_θ``,

    .. math::
        \\ell_{i,t} = -\\min\\big(\\rho_{i,t} \\hat A_i,\\ \\mathrm{clip}(\\rho_{i,t},
            1 - \\varepsilon, 1 + \\varepsilon_{high}) \\hat A_i\\big)
            + \\beta\\, (e^{d_{i,t}} - d_{i,t} - 1)

    (Shao et al., the GRPO objective, Eq. 3, negated, with its k3 KL estimator;
    ``e^d - d - 1 = π_ref/π_θ - log(π_ref/π_θ) - 1 ≥ 0``, computed as ``expm1(d) - d``).
    Token losses are combined per sequence by ``normalization``:

    * ``"sequence"``: ``(1/|o_i|) Σ_t ℓ_{i,t}``, then the mean over sequences. This is
      the paper's ``(1/G) Σ_i (1/|o_i|) Σ_t`` and TRL ``loss_type="grpo"``.
    * ``"token"``: one token-level mean over all valid tokens of the batch,
      ``Σ_{i,t} ℓ / Σ_i |o_i|``. This is DAPO's token-level loss and TRL's default
      (``"dapo"``/``"bnpo"``). The per-sequence values (``reduce_fn=None``) are
      ``Σ_t ℓ_{i,t} / mean_j |o_j|``, so their mean is that token mean.
    * ``"constant"``: ``Σ_t ℓ_{i,t} / T`` with ``T`` the padded length. This is the
      Dr.GRPO form (TRL ``"dr_grpo"``), with no length bias.

    Usage: with one update per batch of samples pass ``old_logps=None``, i.e.
    ``π_old = stop_gradient(π_θ)``. Then ``ρ = 1`` but the gradient is the policy gradient
    ``-Â ∇log π_θ``. Pass the sampling-time log-probs for later PPO epochs. Use
    ``epsilon_high > epsilon`` for DAPO's clip-higher. Advantages (``[...]`` per sequence
    or ``[..., T]`` per token), ``old_logps`` and ``ref_logps`` are constants.
    ``ref_logps=None`` drops the KL term and then requires ``beta=0``. For finiteness at
    extreme inputs, both log-ratios are clamped to ``±log_ratio_limit`` before
    ``exp`` (our guard, not in the paper). Beyond the clamp the token gets no gradient;
    at the default 20 that means ratios above ``e^20``. Padding tokens
    (``token_where=False``) and masked sequences contribute nothing, even if their
    log-probs are ``-inf``. A sequence without valid tokens is not counted.

    Args:
      logps: ``[..., T]`` per-token log-probs of the sampled tokens under the policy.
      old_logps: ``[..., T]`` under the sampling policy, or None (``stop_gradient(logps)``).
      ref_logps: ``[..., T]`` under the frozen reference, or None (no KL term).
      advantages: ``[...]`` per-sequence (e.g. :func:`grpo_advantages`) or ``[..., T]``.
      token_where: ``[..., T]`` boolean mask of completion tokens.
      epsilon: lower clip range ``ε`` in ``[0, 1)``.
      epsilon_high: upper clip range (``None``: ``epsilon``).
      beta: KL coefficient (0.04 is the DeepSeekMath value as usually quoted, not checked
        here; TRL's default is 0).
      normalization: one of :data:`NORMALIZATIONS`.
      log_ratio_limit: clamp for the log-ratios, or None.
      where: ``[...]`` boolean mask of sequences.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-sequence values ``[...]``.

    Returns:
      The reduced loss, or ``[...]`` per-sequence values.

    >>> import jax.numpy as jnp
    >>> lp = jnp.log(jnp.array([[0.5, 0.5]]))
    >>> float(clipped_surrogate(lp, None, lp, jnp.array([2.0])))  # ρ = 1, KL = 0: -Â
    -2.0

    References:
      Shao et al., DeepSeekMath, 2024, arXiv:2402.03300 (GRPO).
      Schulman et al., Proximal Policy Optimization Algorithms, 2017, arXiv:1707.06347.
      Schulman, Approximating KL Divergence, 2020 (the k3 estimator).
      Yu et al., DAPO: An Open-Source LLM Reinforcement Learning System at Scale, 2025,
      arXiv:2503.14476.
      Liu et al., Understanding R1-Zero-Like Training: A Critical Perspective, 2025,
      arXiv:2503.20783 (Dr.GRPO).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    check_static_range(epsilon, "epsilon", low=0.0, high=1.0, high_inclusive=False)
    high = epsilon if epsilon_high is None else epsilon_high
    check_static_range(high, "epsilon_high", low=0.0, high=float("inf"))
    if ref_logps is None and not is_traced(beta) and np.any(np.asarray(beta, np.float64) != 0):
        raise ValueError("ref_logps=None drops the KL term: pass beta=0.0 explicitly")
    arrays = (logps, old_logps, ref_logps, advantages, token_where, where)
    per_seq, seq_valid = _clipped_surrogate(
        *(_array(a) for a in arrays),
        _array(epsilon),
        _array(high),
        _array(beta),
        _array(log_ratio_limit),
        normalization=normalization,
    )
    return reduce_losses(per_seq, where=seq_valid, reduce_fn=reduce_fn)


@_kernel(static_argnames=("normalization",))
def _clipped_surrogate(
    logps,
    old_logps,
    ref_logps,
    advantages,
    token_where,
    where,
    epsilon,
    high,
    beta,
    limit,
    *,
    normalization,
):
    lp, old, ref, adv, tokens = _surrogate_inputs(
        logps, old_logps, ref_logps, advantages, token_where, where
    )
    ratio = jnp.exp(_clip_log(lp - old, limit))
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + high)
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    if ref is not None:
        d = _clip_log(ref - lp, limit)
        per_token = per_token + beta * (jnp.expm1(d) - d)
    count = jnp.sum(tokens, axis=-1)
    total = jnp.sum(jnp.where(tokens, per_token, 0.0), axis=-1)
    seq_valid = count > 0
    if normalization == "sequence":
        per_seq = total / jnp.maximum(count, 1)
    elif normalization == "token":
        mean_len = jnp.sum(count) / jnp.maximum(jnp.sum(seq_valid), 1)
        per_seq = total / jnp.maximum(mean_len, 1.0)
    else:
        per_seq = total / lp.shape[-1]
    return jnp.where(seq_valid, per_seq, 0.0), seq_valid


def surrogate_metrics(
    logps: ArrayLike,
    old_logps: ArrayLike | None,
    ref_logps: ArrayLike | None,
    advantages: ArrayLike,
    *,
    token_where: Mask = None,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    log_ratio_limit: float | None = 20.0,
    where: Mask = None,
) -> dict[str, Array]:
    """Token-mean diagnostics of :func:`clipped_surrogate` (stop-gradient scalars).

    Returns a dict with ``"clip_fraction"`` (tokens whose gradient the clip removes:
    ``ρ < 1 - ε`` with ``Â < 0`` or ``ρ > 1 + ε_high`` with ``Â > 0``), its
    ``"low_clip_fraction"`` and ``"high_clip_fraction"`` parts, ``"ratio_mean"``, and,
    when ``ref_logps`` is given, ``"kl"``, the mean k3 estimate of ``KL(π_θ ‖ π_ref)``.
    Means run over all valid tokens of the batch; 0 when there are none.

    >>> import jax.numpy as jnp
    >>> lp = jnp.zeros((1, 3))
    >>> m = surrogate_metrics(lp, lp - 1.0, None, jnp.array([1.0]))
    >>> float(m["clip_fraction"]), round(float(m["ratio_mean"]), 4)  # ρ = e > 1.2, Â > 0
    (1.0, 2.7183)
    """
    high = epsilon if epsilon_high is None else epsilon_high
    lp, old, ref, adv, tokens = _surrogate_inputs(
        logps, old_logps, ref_logps, advantages, token_where, where
    )
    lp, old, adv = (jax.lax.stop_gradient(x) for x in (lp, old, adv))
    count = jnp.maximum(jnp.sum(tokens), 1)

    def token_mean(x: Array) -> Array:
        return jnp.sum(jnp.where(tokens, x, 0.0)) / count

    ratio = jnp.exp(_clip_log(lp - old, log_ratio_limit))
    low = (ratio < 1.0 - epsilon) & (adv < 0)
    high_clip = (ratio > 1.0 + high) & (adv > 0)
    metrics = {
        "clip_fraction": token_mean((low | high_clip).astype(lp.dtype)),
        "low_clip_fraction": token_mean(low.astype(lp.dtype)),
        "high_clip_fraction": token_mean(high_clip.astype(lp.dtype)),
        "ratio_mean": token_mean(ratio),
    }
    if ref is not None:
        d = _clip_log(ref - lp, log_ratio_limit)
        metrics["kl"] = token_mean(jnp.expm1(d) - d)
    return metrics
