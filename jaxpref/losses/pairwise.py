"""Pairwise preference objectives: Bradley-Terry and the DPO family.

Every function takes per-pair arrays of any shape ``[...]`` (leading axes are batch axes),
arrays positional and options keyword-only, and shares two options (see
:mod:`jaxpref.types`): ``where`` masks pairs (a masked pair contributes nothing, not even NaN
gradients) and ``reduce_fn`` reduces per-pair losses (``None`` returns them).

The DPO-family objectives are thin wrappers over :func:`logratio_loss`, which builds the
log-ratio margin

.. math:: h = (\\log\\pi_\\theta(y_w) - \\log\\pi_{ref}(y_w))
              - (\\log\\pi_\\theta(y_l) - \\log\\pi_{ref}(y_l))

and applies a per-pair loss of ``h``. Reference log-probs are constants (stop-gradient);
passing ``None`` for both makes an objective reference-free. Inputs are cast up to float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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

ReduceArg = Callable[..., Any] | None


def sigmoid_cross_entropy(z: Array, label_smoothing: ArrayLike = 0.0) -> Array:
    """Binary cross-entropy of logit ``z`` against target ``1 - label_smoothing``.

    .. math:: \\ell(z) = -(1-\\varepsilon)\\log\\sigma(z) - \\varepsilon\\log\\sigma(-z)

    computed as softplus terms, finite for any finite ``z``.
    """
    return (1.0 - label_smoothing) * jax.nn.softplus(-z) + label_smoothing * jax.nn.softplus(z)


def logratio_margin(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike | None,
    reference_rejected_logps: ArrayLike | None,
    *,
    where: Mask = None,
) -> tuple[Array, Array | None]:
    """Returns the DPO log-ratio margin ``h`` ``[...]`` and the broadcast pair mask.

    Masked pairs are sanitised to 0 before any arithmetic. Reference log-probs are wrapped in
    ``stop_gradient``; ``None`` for both references means reference-free (``h`` is the policy
    log-prob difference).
    """
    pc = as_float(policy_chosen_logps, "policy_chosen_logps")
    pr = as_float(policy_rejected_logps, "policy_rejected_logps")
    if (reference_chosen_logps is None) != (reference_rejected_logps is None):
        raise ValueError(
            "reference_chosen_logps and reference_rejected_logps must both be arrays or both "
            "be None (reference-free)"
        )
    if reference_chosen_logps is None:
        rc = rr = jnp.zeros((), pc.dtype)
    else:
        rc = jax.lax.stop_gradient(as_float(reference_chosen_logps, "reference_chosen_logps"))
        rr = jax.lax.stop_gradient(as_float(reference_rejected_logps, "reference_rejected_logps"))
    shape = jnp.broadcast_shapes(pc.shape, pr.shape, rc.shape, rr.shape)
    mask = as_mask(where, shape)
    pc, pr, rc, rr = (sanitize(mask, jnp.broadcast_to(a, shape)) for a in (pc, pr, rc, rr))
    return (pc - rc) - (pr - rr), mask


def logratio_loss(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike | None,
    reference_rejected_logps: ArrayLike | None,
    *,
    margin_loss_fn: Callable[[Array], Array],
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """The general DPO-family objective: ``margin_loss_fn(h)`` per pair, then reduced.

    Args:
      policy_chosen_logps: ``[...]`` policy log-probs of the chosen responses.
      policy_rejected_logps: ``[...]`` policy log-probs of the rejected responses.
      reference_chosen_logps: ``[...]`` reference log-probs (constants), or None.
      reference_rejected_logps: ``[...]`` reference log-probs (constants), or None.
      margin_loss_fn: maps the margin ``h`` ``[...]`` to per-pair losses ``[...]``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: see :mod:`jaxpref.types`.

    Returns:
      The reduced loss (float32), or per-pair losses ``[...]`` if ``reduce_fn`` is None.

    >>> import jax.numpy as jnp
    >>> loss = logratio_loss(jnp.array([-1.0]), jnp.array([-2.0]), None, None,
    ...                      margin_loss_fn=lambda h: (h - 1.0) ** 2)
    >>> float(loss)
    0.0
    """
    h, mask = logratio_margin(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        where=where,
    )
    return reduce_losses(margin_loss_fn(h), where=mask, reduce_fn=reduce_fn)


def dpo(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike | None,
    reference_rejected_logps: ArrayLike | None,
    *,
    beta: ArrayLike = 0.1,
    label_smoothing: ArrayLike = 0.0,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Direct Preference Optimization; ``label_smoothing > 0`` is conservative DPO (cDPO).

    .. math::
        L = -(1-\\varepsilon)\\log\\sigma(\\beta h) - \\varepsilon\\log\\sigma(-\\beta h)

    with ``h`` the log-ratio margin of summed sequence log-probs. With ``ε = 0`` this is DPO
    (Rafailov et al., Eq. 7). cDPO assumes labels are flipped with probability ``ε``; its
    optimum is finite: ``σ(β h*) = 1 - ε``, i.e. ``h* = log((1-ε)/ε) / β``.

    Args:
      policy_chosen_logps: ``[...]`` summed policy log-probs of chosen responses.
      policy_rejected_logps: ``[...]`` summed policy log-probs of rejected responses.
      reference_chosen_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      reference_rejected_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      beta: inverse temperature (KL strength); scalar or ``[...]``.
      label_smoothing: cDPO flip probability ``ε`` in ``[0, 1]``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> round(float(dpo(jnp.array([-5.0]), jnp.array([-5.0]),
    ...                 jnp.array([-5.0]), jnp.array([-5.0]))), 4)  # h = 0: log 2
    0.6931

    References:
      Rafailov et al., Direct Preference Optimization: Your Language Model is Secretly a
      Reward Model, 2023, arXiv:2305.18290.
      Mitchell, A note on DPO with noisy preferences & relationship to IPO, 2023.
    """
    check_static_range(label_smoothing, "label_smoothing", low=0.0, high=1.0)
    return logratio_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        margin_loss_fn=lambda h: sigmoid_cross_entropy(beta * h, label_smoothing),
        where=where,
        reduce_fn=reduce_fn,
    )


def robust_dpo(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike | None,
    reference_rejected_logps: ArrayLike | None,
    *,
    beta: ArrayLike = 0.1,
    label_smoothing: float = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Provably robust DPO (rDPO): an unbiased loss under labels flipped with rate ``ε``.

    .. math::
        L = \\frac{(1-\\varepsilon)\\,\\ell(h) - \\varepsilon\\,\\ell(-h)}{1 - 2\\varepsilon},
        \\qquad \\ell(z) = -\\log\\sigma(\\beta z)

    (Chowdhury et al., Eq. 7). Unbiased: the expectation over flips of the loss of the noisy
    label equals the clean DPO loss. The per-pair loss is unbounded below as ``h → ∞``
    (its slope tends to ``-βε/(1-2ε)``): monitor ``h``.

    Args:
      policy_chosen_logps: ``[...]`` summed policy log-probs of chosen responses.
      policy_rejected_logps: ``[...]`` summed policy log-probs of rejected responses.
      reference_chosen_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      reference_rejected_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      beta: inverse temperature.
      label_smoothing: assumed flip rate ``ε``; must satisfy ``0 <= ε < 0.5`` (checked
        whenever it is a concrete value; a traced value cannot be checked).
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    Raises:
      ValueError: unless ``0 <= label_smoothing < 0.5``.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([-4.0])
    >>> round(float(robust_dpo(x, x, x, x, label_smoothing=0.2)), 4)  # h = 0: log 2
    0.6931

    References:
      Chowdhury, Kini & Natarajan, Provably Robust DPO: Aligning Language Models with Noisy
      Feedback, 2024, arXiv:2403.00409.
    """
    check_static_range(
        label_smoothing, "robust_dpo label_smoothing", low=0.0, high=0.5, high_inclusive=False
    )

    def margin_loss(h: Array) -> Array:
        eps = label_smoothing
        return ((1.0 - eps) * jax.nn.softplus(-beta * h) - eps * jax.nn.softplus(beta * h)) / (
            1.0 - 2.0 * eps
        )

    return logratio_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        margin_loss_fn=margin_loss,
        where=where,
        reduce_fn=reduce_fn,
    )


def ipo(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike | None,
    reference_rejected_logps: ArrayLike | None,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Identity preference optimisation (IPO, Ψ-PO with identity Ψ).

    .. math:: L = \\left(h - \\frac{1}{2\\beta}\\right)^2

    (Azar et al., Eq. 17, with ``τ`` passed as ``beta``). The square pulls ``h`` towards the
    finite target ``1/(2β)`` from both sides.

    Two uses, chosen by what the caller passes:

    * summed sequence log-probs (the original code of Azar et al./Mitchell);
    * length-averaged log-probs, i.e. each sequence's log-ratio divided by its completion
      length, as TRL and HALOs do (TRL reports this matches the paper's results).
      Use ``sequence_logps(..., average=True)`` for both policy and reference.

    Args:
      policy_chosen_logps: ``[...]`` policy log-probs (summed or averaged) of chosen responses.
      policy_rejected_logps: ``[...]`` policy log-probs of rejected responses.
      reference_chosen_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      reference_rejected_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      beta: regularisation strength ``τ``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> z = jnp.zeros(1)
    >>> float(ipo(z + 5.0, z, z, z, beta=0.1))  # h = 5 = 1/(2 beta): at the target
    0.0

    References:
      Azar et al., A General Theoretical Paradigm to Understand Learning from Human
      Preferences, 2023, arXiv:2310.12036.
    """
    return logratio_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        margin_loss_fn=lambda h: jnp.square(h - 1.0 / (2.0 * beta)),
        where=where,
        reduce_fn=reduce_fn,
    )


def hinge(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike | None,
    reference_rejected_logps: ArrayLike | None,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """DPO-style hinge (SLiC-HF calibration loss with the reference in the margin).

    .. math:: L = \\max(0, 1 - \\beta h)

    i.e. a hinge with margin ``1/β`` on ``h`` (the form TRL calls ``"hinge"``). Pairs that meet
    the margin give no gradient.

    Args:
      policy_chosen_logps: ``[...]`` summed policy log-probs of chosen responses.
      policy_rejected_logps: ``[...]`` summed policy log-probs of rejected responses.
      reference_chosen_logps: ``[...]`` reference log-probs (stop-gradient), or None
        (reference-free: the original SLiC calibration term with ``δ = 1/β``).
      reference_rejected_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      beta: inverse margin.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> z = jnp.zeros(1)
    >>> float(hinge(z, z, z, z, beta=0.1))
    1.0

    References:
      Zhao et al., SLiC-HF: Sequence Likelihood Calibration with Human Feedback, 2023,
      arXiv:2305.10425.
    """
    return logratio_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        margin_loss_fn=lambda h: jax.nn.relu(1.0 - beta * h),
        where=where,
        reduce_fn=reduce_fn,
    )


def soft_preference(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    reference_chosen_logps: ArrayLike | None,
    reference_rejected_logps: ArrayLike | None,
    preference_strength: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Soft-label DPO: the soft-preference cross-entropy (SPCE) of OSP.

    .. math:: L = -p\\log\\sigma(\\beta h) - (1-p)\\log\\sigma(-\\beta h)

    where ``p`` is the (stop-gradient) probability that the "chosen" response is preferred.
    ``p = 1`` is DPO; ``p = 0.5`` (a tie) has its optimum at ``h = 0``; ``p = 1 - ε`` is cDPO.
    The optimum is ``σ(β h*) = p``.

    Args:
      policy_chosen_logps: ``[...]`` summed policy log-probs of the first response.
      policy_rejected_logps: ``[...]`` summed policy log-probs of the second response.
      reference_chosen_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      reference_rejected_logps: ``[...]`` reference log-probs (stop-gradient), or None.
      preference_strength: ``[...]`` target probability ``p`` in ``[0, 1]`` (checked when
        concrete) that the first response is preferred.
      beta: inverse temperature.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> z = jnp.zeros(1)
    >>> round(float(soft_preference(z, z, z, z, jnp.array([0.5]))), 4)
    0.6931

    References:
      Zhai et al., Online Self-Preferring Language Models, 2024, arXiv:2405.14103.
    """
    h, mask = logratio_margin(
        policy_chosen_logps,
        policy_rejected_logps,
        reference_chosen_logps,
        reference_rejected_logps,
        where=where,
    )
    p = jax.lax.stop_gradient(as_float(preference_strength, "preference_strength"))
    p = sanitize(mask, jnp.broadcast_to(p, h.shape), fill=0.5)
    check_static_range(p, "preference_strength", low=0.0, high=1.0)
    losses = sigmoid_cross_entropy(beta * h, 1.0 - p)
    return reduce_losses(losses, where=mask, reduce_fn=reduce_fn)
