"""Reference-free pairwise objectives on length-averaged log-probs: SimPO and ORPO."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpref.losses._reduce import as_float, as_mask, check_static_range, reduce_losses, sanitize
from jaxpref.losses.pairwise import ReduceArg, logratio_loss, sigmoid_cross_entropy
from jaxpref.types import Array, ArrayLike, Mask


def simpo(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    *,
    beta: ArrayLike = 2.0,
    gamma: ArrayLike = 1.0,
    label_smoothing: ArrayLike = 0.0,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """SimPO: reference-free, length-normalised, with a target reward margin ``γ``.

    .. math:: L = -\\log\\sigma\\big(\\beta(\\bar{a}_w - \\bar{a}_l) - \\gamma\\big)

    (Meng et al., Eq. 6) where ``ā`` are length-averaged policy log-probs
    (``sequence_logps(..., average=True)``). The official code parameterises
    ``γ = β · gamma_beta_ratio``. ``label_smoothing`` applies cDPO-style smoothing.

    Args:
      policy_chosen_logps: ``[...]`` length-averaged policy log-probs of chosen responses.
      policy_rejected_logps: ``[...]`` length-averaged policy log-probs of rejected responses.
      beta: reward scale.
      gamma: target margin.
      label_smoothing: flip probability in ``[0, 1]``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> round(float(simpo(jnp.array([-1.0]), jnp.array([-1.5]), beta=2.0, gamma=1.0)), 4)
    0.6931

    References:
      Meng, Xia & Chen, SimPO: Simple Preference Optimization with a Reference-Free Reward,
      2024, arXiv:2405.14734.
    """
    check_static_range(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    return logratio_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        None,
        None,
        margin_loss_fn=lambda d: sigmoid_cross_entropy(beta * d - gamma, label_smoothing),
        where=where,
        reduce_fn=reduce_fn,
    )


#: ORPO clamps averaged log-probs to at most this value so that ``log(1 - p)`` stays finite.
ORPO_MAX_AVERAGE_LOGP = -1e-6


def log_odds(average_logps: Array) -> Array:
    """``log(p / (1 - p))`` for ``p = exp(average_logps)``, stable near ``p → 0`` and ``p → 1``.

    Uses ``log(1 - exp(a)) = log(-expm1(a))`` and clamps ``a <= -1e-6``.
    """
    a = jnp.minimum(average_logps, ORPO_MAX_AVERAGE_LOGP)
    return a - jnp.log(-jnp.expm1(a))


def orpo(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """ORPO: supervised NLL on the chosen response plus an odds-ratio preference term.

    .. math::
        L = -\\bar{a}_w - \\beta\\log\\sigma\\big(\\log\\mathrm{odds}(y_w) -
            \\log\\mathrm{odds}(y_l)\\big),\\quad
        \\log\\mathrm{odds}(y) = \\bar{a} - \\log(1 - e^{\\bar{a}})

    (Hong et al., Eqs. 4–7; ``λ`` is passed as ``beta``) where ``ā`` are length-averaged
    policy log-probs, so ``-ā_w`` is the token-mean NLL of the chosen response. ``ā`` is
    clamped to ``<= -1e-6`` (a probability of 1 has infinite odds); the clamp has zero
    gradient, so inputs at or above it receive no odds-ratio gradient.

    Args:
      policy_chosen_logps: ``[...]`` length-averaged policy log-probs of chosen responses.
      policy_rejected_logps: ``[...]`` length-averaged policy log-probs of rejected ones.
      beta: weight ``λ`` of the odds-ratio term (paper/TRL: 0.1).
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> a = jnp.array([-1.0])
    >>> round(float(orpo(a, a, beta=1.0)), 4)  # 1 + log 2
    1.6931

    References:
      Hong, Lee & Thorne, ORPO: Monolithic Preference Optimization without Reference Model,
      2024, arXiv:2403.07691.
    """
    aw = as_float(policy_chosen_logps, "policy_chosen_logps")
    al = as_float(policy_rejected_logps, "policy_rejected_logps")
    shape = jnp.broadcast_shapes(aw.shape, al.shape)
    mask = as_mask(where, shape)
    aw, al = (sanitize(mask, jnp.broadcast_to(a, shape), fill=-1.0) for a in (aw, al))
    ratio = log_odds(aw) - log_odds(al)
    losses = -aw + beta * jax.nn.softplus(-ratio)
    return reduce_losses(losses, where=mask, reduce_fn=reduce_fn)
