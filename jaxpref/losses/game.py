"""Nash-learning objectives: online IPO (both forms), Nash-MD (regression and PG) and EGPO.

These objectives target the Nash equilibrium of the KL-regularised preference game

.. math:: \\max_\\pi \\min_{\\pi'}\\; P(\\pi \\succ \\pi') - \\beta\\,KL(\\pi\\|\\pi_{ref})
          + \\beta\\,KL(\\pi'\\|\\pi_{ref})

for a general (possibly intransitive) preference ``P(y ≻ y') = 1 - P(y' ≻ y)``. The pair
objectives are one square regression of log-ratios onto preference targets computed from an
*opponent* policy, :func:`preference_regression`,

.. math:: L = \\big(h - t/\\beta\\big)^2, \\qquad
          h = [\\log\\pi_\\theta(y) - \\log\\pi_{ref}(y)]
              - [\\log\\pi_\\theta(y') - \\log\\pi_{ref}(y')]

and differ only in the opponent behind the target ``t``, which the caller computes (by
sampling and a preference model) and passes in as a constant (stop-gradient). The self-play
objectives SPPO and GPO are in :mod:`jaxpref.losses.self_play`, the GPM score and loss in
:mod:`jaxpref.losses.general_preference`, and EGPO's two-call update in
:mod:`jaxpref.losses.game_updates`.

Arrays are positional and options keyword-only; ``where`` masks examples and ``reduce_fn``
reduces them (see :mod:`jaxpref.types`). Inputs are cast up to float32. Exact tabular test
beds for all of these live in :mod:`jaxpref.games`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxpref.losses._reduce import (
    as_constant,
    as_float,
    as_mask,
    check_static_range,
    reduce_losses,
    sanitize,
)
from jaxpref.losses.pairwise import logratio_margin
from jaxpref.types import Array, ArrayLike, Mask

ReduceArg = Callable[..., Any] | None


def preference_regression(
    policy_logps: ArrayLike,
    policy_other_logps: ArrayLike,
    reference_logps: ArrayLike | None,
    reference_other_logps: ArrayLike | None,
    target: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """The shared Nash-learning regression: ``(h - target / beta)^2`` per pair ``(y, y')``.

    ``h`` is the log-ratio margin of :func:`jaxpref.losses.logratio_margin` (reference
    log-probs are constants; None for both is reference-free) and ``target`` a constant
    preference contrast in ``[-1, 1]``. Its population minimiser over a tabular policy is
    ``log π(y) = log π_ref(y) + t(y)/β + const`` whenever the target is a contrast
    ``t(y, y') = g(y) - g(y')``: the regularised best response to the opponent behind ``g``.

    Args:
      policy_logps: ``[...]`` policy log-probs of ``y``.
      policy_other_logps: ``[...]`` policy log-probs of ``y'``.
      reference_logps: ``[...]`` reference log-probs of ``y`` (stop-gradient), or None.
      reference_other_logps: ``[...]`` reference log-probs of ``y'``, or None.
      target: ``[...]`` preference contrast ``t`` (stop-gradient).
      beta: KL strength ``β > 0`` (scalar).
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> z = jnp.zeros(1)
    >>> float(preference_regression(z + 2.0, z, z, z, z + 0.2, beta=0.1))  # h = t / beta
    0.0
    """
    t = as_constant(target, "target")
    arrays = [policy_logps, policy_other_logps, reference_logps, reference_other_logps]
    shape = jnp.broadcast_shapes(t.shape, *(jnp.shape(x) for x in arrays if x is not None))
    arrays = [None if x is None else jnp.broadcast_to(jnp.asarray(x), shape) for x in arrays]
    h, mask = logratio_margin(*arrays, where=where)
    t = sanitize(mask, jnp.broadcast_to(t, shape))
    return reduce_losses(jnp.square(h - t / beta), where=mask, reduce_fn=reduce_fn)


def online_ipo(
    policy_logps: ArrayLike,
    policy_other_logps: ArrayLike,
    reference_logps: ArrayLike | None,
    reference_other_logps: ArrayLike | None,
    preference: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Online IPO: IPO on on-policy pairs labelled by a preference model.

    .. math:: L = \\Big(h(y, y') - \\frac{P(y \\succ y') - 1/2}{\\beta}\\Big)^2,
              \\qquad y, y' \\sim \\mathrm{sg}(\\pi_\\theta)

    (Calandriello et al., online IPO; the population form is ``online_ipo_2`` of the EGPO
    simulations, ``E_{y,y'~sg(π)}(h - (P(y≻y') - ½)/β)²``). With a hard label ``P = 1`` it is
    IPO, ``(h - 1/(2β))²``. Sampling ``y, y'`` from the current policy is the caller's job; the
    other ("OMD") form is :func:`online_ipo_omd`.

    Args:
      policy_logps: ``[...]`` policy log-probs of sample ``y``.
      policy_other_logps: ``[...]`` policy log-probs of sample ``y'``.
      reference_logps: ``[...]`` reference log-probs of ``y`` (stop-gradient), or None.
      reference_other_logps: ``[...]`` reference log-probs of ``y'``, or None.
      preference: ``[...]`` ``P(y ≻ y')`` in ``[0, 1]`` from the preference model
        (stop-gradient).
      beta: KL strength ``β > 0``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> z = jnp.zeros(1)
    >>> float(online_ipo(z + 5.0, z, z, z, z + 1.0, beta=0.1))  # hard label: IPO's target
    0.0

    References:
      Munos et al., Nash Learning from Human Feedback, 2023, arXiv:2312.00886.
      Calandriello et al., Human Alignment of Large Language Models through Online Preference
      Optimisation, 2024, arXiv:2403.08635.
      Zhou, Fazel & Du, Extragradient Preference Optimization (EGPO), 2025, arXiv:2503.08942
      (code: zhourunlong/EGPO, ``simulations/loss_funcs.py``).
    """
    p = as_constant(preference, "preference")
    return preference_regression(
        policy_logps,
        policy_other_logps,
        reference_logps,
        reference_other_logps,
        p - 0.5,
        beta=beta,
        where=where,
        reduce_fn=reduce_fn,
    )


def _contrast(win_rate: ArrayLike, win_rate_other: ArrayLike, names: tuple[str, str]) -> Array:
    return as_constant(win_rate, names[0]) - as_constant(win_rate_other, names[1])


def online_ipo_omd(
    policy_logps: ArrayLike,
    policy_other_logps: ArrayLike,
    reference_logps: ArrayLike | None,
    reference_other_logps: ArrayLike | None,
    win_rate: ArrayLike,
    win_rate_other: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Online IPO, mirror-descent form: regress on win rates against the current policy.

    .. math:: L = \\Big(h(y, y') - \\frac{P(y \\succ \\pi_t) - P(y' \\succ \\pi_t)}{\\beta}\\Big)^2,
              \\qquad \\pi_t = \\mathrm{sg}(\\pi_\\theta)

    (EGPO simulations ``online_ipo_1``, "Online IPO 1 (OMD)"; sample form: one opponent
    sample ``y'' ~ π_t`` gives ``P(y≻y'') - P(y'≻y'')``, as in the EGPO LLM trainer). A
    gradient step on the population loss over all pairs is a mirror-descent step on the
    regularised game: for tabular softmax logits and SGD at rate ``lr``,
    ``log π_{t+1} = (1-ηβ) log π_t + ηβ log π_ref + η P(·≻π_t)`` with ``η = 4·lr/(Kβ)``.

    Args:
      policy_logps: ``[...]`` policy log-probs of ``y``.
      policy_other_logps: ``[...]`` policy log-probs of ``y'``.
      reference_logps: ``[...]`` reference log-probs of ``y`` (stop-gradient), or None.
      reference_other_logps: ``[...]`` reference log-probs of ``y'``, or None.
      win_rate: ``[...]`` ``P(y ≻ π_t)`` (or ``P(y ≻ y'')``), stop-gradient.
      win_rate_other: ``[...]`` ``P(y' ≻ π_t)`` (or ``P(y' ≻ y'')``), stop-gradient.
      beta: KL strength ``β > 0``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> z = jnp.zeros(1)
    >>> float(online_ipo_omd(z + 3.0, z, z, z, z + 0.8, z + 0.5, beta=0.1))
    0.0

    References:
      Munos et al., Nash Learning from Human Feedback, 2023, arXiv:2312.00886.
      Calandriello et al., Human Alignment of Large Language Models through Online Preference
      Optimisation, 2024, arXiv:2403.08635.
      Zhou, Fazel & Du, Extragradient Preference Optimization (EGPO), 2025, arXiv:2503.08942
      (code: zhourunlong/EGPO, ``simulations/loss_funcs.py``).
    """
    return preference_regression(
        policy_logps,
        policy_other_logps,
        reference_logps,
        reference_other_logps,
        _contrast(win_rate, win_rate_other, ("win_rate", "win_rate_other")),
        beta=beta,
        where=where,
        reduce_fn=reduce_fn,
    )


def nash_md(
    policy_logps: ArrayLike,
    policy_other_logps: ArrayLike,
    reference_logps: ArrayLike | None,
    reference_other_logps: ArrayLike | None,
    mixture_win_rate: ArrayLike,
    mixture_win_rate_other: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Nash-MD as a regression: win rates against the geometric mixture with the reference.

    .. math::
        \\pi_t^\\mu(y) \\propto \\pi_t(y)^{1-\\eta\\beta}\\,\\pi_{ref}(y)^{\\eta\\beta}, \\qquad
        L = \\Big(h(y, y')
            - \\frac{P(y \\succ \\pi_t^\\mu) - P(y' \\succ \\pi_t^\\mu)}{\\beta}\\Big)^2

    Nash-MD's mirror-descent step (Munos et al.) is
    ``π_{t+1} ∝ π_t^μ · exp(η P(·≻π_t^μ))``; the EGPO simulations (``nash_md``) implement one
    step as this regression with the mixture ``(1-ηβ) log π_t + ηβ log π_ref`` taken as
    stop-gradient (see :func:`geometric_mixture`), and its sample form uses
    ``P(y≻y'') - P(y'≻y'')`` with ``y'' ~ π_t^μ``. The loss is :func:`preference_regression`;
    what makes it Nash-MD is the opponent behind the targets. ``ηβ ≤ 1`` is required for the
    mixture to interpolate. For the policy-gradient surrogate see :func:`nash_md_pg`.

    Args:
      policy_logps: ``[...]`` policy log-probs of ``y``.
      policy_other_logps: ``[...]`` policy log-probs of ``y'``.
      reference_logps: ``[...]`` reference log-probs of ``y`` (stop-gradient), or None.
      reference_other_logps: ``[...]`` reference log-probs of ``y'``, or None.
      mixture_win_rate: ``[...]`` ``P(y ≻ π_t^μ)`` (or ``P(y ≻ y'')``, ``y'' ~ π_t^μ``).
      mixture_win_rate_other: ``[...]`` ``P(y' ≻ π_t^μ)`` (or ``P(y' ≻ y'')``).
      beta: KL strength ``β > 0``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> z = jnp.zeros(1)
    >>> round(float(nash_md(z, z, z, z, z + 0.6, z + 0.5, beta=0.1)), 6)  # (0 - 1)^2
    1.0

    References:
      Munos et al., Nash Learning from Human Feedback, 2023, arXiv:2312.00886.
      Calandriello et al., Human Alignment of Large Language Models through Online Preference
      Optimisation, 2024, arXiv:2403.08635.
      Zhou, Fazel & Du, Extragradient Preference Optimization (EGPO), 2025, arXiv:2503.08942
      (code: zhourunlong/EGPO, ``simulations/loss_funcs.py``).
    """
    return preference_regression(
        policy_logps,
        policy_other_logps,
        reference_logps,
        reference_other_logps,
        _contrast(
            mixture_win_rate, mixture_win_rate_other, ("mixture_win_rate", "mixture_win_rate_other")
        ),
        beta=beta,
        where=where,
        reduce_fn=reduce_fn,
    )


def nash_md_pg(
    policy_logps: ArrayLike,
    reference_logps: ArrayLike,
    mixture_win_rate: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Nash-MD-PG: the policy-gradient objective against the geometric mixture.

    The Nash-MD-PG surrogate (Munos et al.; EGPO simulations ``nash_md_pg`` /
    ``nash_md_pg_sample``) is

    .. math::
        -\\,\\mathrm{sg}\\big[P(y \\succ \\pi_t^\\mu) - \\beta(\\log\\pi_\\theta(y)
            - \\log\\pi_{ref}(y))\\big]\\,\\log\\pi_\\theta(y), \\qquad y \\sim \\pi_\\theta,

    whose gradient is the REINFORCE estimate of ``∇ E_π[P(y≻π^μ)] - β ∇KL(π‖π_ref)``. This
    function returns the per-sample value

    .. math::
        L = -P(y \\succ \\pi_t^\\mu)\\,\\log\\pi_\\theta(y)
            + \\frac{\\beta}{2}\\big(\\log\\pi_\\theta(y) - \\log\\pi_{ref}(y)\\big)^2,

    whose derivative in ``log π_θ(y)`` is the same ``-(P(y≻π^μ) - β(log π_θ - log π_ref))``,
    so every parameter gradient equals the surrogate's, while the value is an honest function
    of its inputs (finite differences agree with ``jax.grad``). ``P(y ≻ π_t^μ)`` may be a
    single-sample estimate ``P(y ≻ y'')`` with ``y'' ~ π_t^μ`` (stop-gradient).

    Args:
      policy_logps: ``[...]`` policy log-probs of samples ``y ~ π_θ``.
      reference_logps: ``[...]`` reference log-probs of ``y`` (stop-gradient).
      mixture_win_rate: ``[...]`` ``P(y ≻ π_t^μ)`` estimates (stop-gradient).
      beta: KL strength ``β``.
      where: ``[...]`` boolean sample mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-sample losses.

    Returns:
      The reduced loss, or ``[...]`` per-sample losses.

    >>> import jax, jax.numpy as jnp
    >>> g = jax.grad(nash_md_pg)(jnp.array([-1.0]), jnp.array([-1.0]), jnp.array([0.7]))
    >>> round(float(g[0]), 6)  # -(0.7 - 0)
    -0.7

    References:
      Munos et al., Nash Learning from Human Feedback, 2023, arXiv:2312.00886.
      Calandriello et al., Human Alignment of Large Language Models through Online Preference
      Optimisation, 2024, arXiv:2403.08635.
      Zhou, Fazel & Du, Extragradient Preference Optimization (EGPO), 2025, arXiv:2503.08942
      (code: zhourunlong/EGPO, ``simulations/loss_funcs.py``).
    """
    lp = as_float(policy_logps, "policy_logps")
    ref = as_constant(reference_logps, "reference_logps")
    w = as_constant(mixture_win_rate, "mixture_win_rate")
    shape = jnp.broadcast_shapes(lp.shape, ref.shape, w.shape)
    mask = as_mask(where, shape)
    lp, ref, w = (sanitize(mask, jnp.broadcast_to(x, shape)) for x in (lp, ref, w))
    per_sample = -w * lp + 0.5 * beta * jnp.square(lp - ref)
    return reduce_losses(per_sample, where=mask, reduce_fn=reduce_fn)


def egpo(
    policy_logps: ArrayLike,
    policy_other_logps: ArrayLike,
    reference_logps: ArrayLike | None,
    reference_other_logps: ArrayLike | None,
    win_rate: ArrayLike,
    win_rate_other: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """EGPO's loss: the online-IPO (OMD) regression against a fixed opponent.

    .. math:: L(\\theta; \\pi_{opp}) = \\Big(h_\\theta(y, y') -
              \\frac{P(y \\succ \\pi_{opp}) - P(y' \\succ \\pi_{opp})}{\\beta}\\Big)^2

    EGPO takes two gradients of this loss per update, both at ``θ_t`` (EGPO simulations
    ``extragradient``; Zhou et al.):

    1. half step ``θ_{t+½} = θ_t - η ∇L(θ_t; π_{θ_t})``;
    2. full step ``θ_{t+1} = θ_t - η ∇L(θ_t; π_{θ_{t+½}})``: the gradient is taken at ``θ_t``
       with win rates against the half-step policy.

    :func:`jaxpref.losses.game_updates.extragradient` packages the two calls for any optax
    optimizer. Extragradient makes the *last* iterate converge (linearly for ``β > 0``) where
    plain mirror descent may cycle.

    Args:
      policy_logps: ``[...]`` policy log-probs of ``y`` at ``θ_t``.
      policy_other_logps: ``[...]`` policy log-probs of ``y'`` at ``θ_t``.
      reference_logps: ``[...]`` reference log-probs of ``y`` (stop-gradient), or None.
      reference_other_logps: ``[...]`` reference log-probs of ``y'``, or None.
      win_rate: ``[...]`` ``P(y ≻ π_opp)`` (or ``P(y ≻ y'')``, ``y'' ~ π_opp``), stop-gradient:
        ``π_opp = π_{θ_t}`` for the half step, ``π_{θ_{t+½}}`` for the full step.
      win_rate_other: ``[...]`` ``P(y' ≻ π_opp)``, stop-gradient.
      beta: KL strength ``β > 0``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> z = jnp.zeros(1)
    >>> float(egpo(z + 2.0, z, z, z, z + 0.75, z + 0.5, beta=0.125))  # h = (0.75-0.5)/0.125
    0.0

    References:
      Munos et al., Nash Learning from Human Feedback, 2023, arXiv:2312.00886.
      Calandriello et al., Human Alignment of Large Language Models through Online Preference
      Optimisation, 2024, arXiv:2403.08635.
      Zhou, Fazel & Du, Extragradient Preference Optimization (EGPO), 2025, arXiv:2503.08942
      (code: zhourunlong/EGPO, ``simulations/loss_funcs.py``).
    """
    return preference_regression(
        policy_logps,
        policy_other_logps,
        reference_logps,
        reference_other_logps,
        _contrast(win_rate, win_rate_other, ("win_rate", "win_rate_other")),
        beta=beta,
        where=where,
        reduce_fn=reduce_fn,
    )


def geometric_mixture(
    policy_logits: ArrayLike, reference_logits: ArrayLike, *, mixture: ArrayLike
) -> Array:
    """Log-probs of the geometric mixture ``π^μ ∝ π^{1-α} π_ref^{α}`` over the last axis.

    ``log π^μ = log_softmax((1-α)·policy_logits + α·reference_logits)`` (the logits need not
    be normalised). Nash-MD uses ``α = ηβ`` (Munos et al.; EGPO simulations:
    ``(1 - lr·β) log π_t + lr·β log π_ref``); for language models apply it per token to the
    next-token logits. Treat the result as a constant (stop-gradient) in Nash-MD.

    Args:
      policy_logits: ``[..., K]`` policy logits (or log-probs).
      reference_logits: ``[..., K]`` reference logits (or log-probs).
      mixture: ``α`` in ``[0, 1]`` (checked when concrete).

    Returns:
      ``[..., K]`` normalised log-probs of the mixture.

    >>> import jax.numpy as jnp
    >>> lp = geometric_mixture(jnp.log(jnp.array([0.9, 0.1])), jnp.zeros(2), mixture=1.0)
    >>> [round(float(x), 4) for x in jnp.exp(lp)]  # alpha = 1: the reference
    [0.5, 0.5]
    """
    check_static_range(mixture, "mixture", low=0.0, high=1.0)
    a = as_float(policy_logits, "policy_logits")
    b = as_float(reference_logits, "reference_logits")
    return jax.nn.log_softmax((1.0 - mixture) * a + mixture * b, axis=-1)
