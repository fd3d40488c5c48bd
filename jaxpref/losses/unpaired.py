"""Unpaired (binary-desirability) objectives: KTO and its KL reference point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxpref.losses._reduce import as_float, as_mask, reduce_losses, sanitize
from jaxpref.types import Array, ArrayLike, Mask


def kto_reference_point(
    policy_kl_logps: ArrayLike,
    reference_kl_logps: ArrayLike,
    *,
    where: Mask = None,
) -> Array:
    """KTO's reference point ``z_0``: a clamped, stop-gradient KL estimate.

    .. math:: z_0 = \\max\\Big(0, \\frac{1}{|V|}\\sum_{j \\in V}
              \\big(\\log\\pi_\\theta(y'_j|x_j) - \\log\\pi_{ref}(y'_j|x_j)\\big)\\Big)

    over *mismatched* pairs ``(x_j, y'_j)``, where ``y'_j`` is the completion of another
    example in the batch (e.g. the batch's completions rolled by one). ``V`` are the valid
    (unmasked) pairs; HALOs counts only non-empty KL sequences, which ``where`` expresses.
    Under a sharded ``jit`` the mean is global across devices. With no valid pair ``z_0 = 0``.

    Args:
      policy_kl_logps: ``[...]`` summed policy log-probs of mismatched completions.
      reference_kl_logps: ``[...]`` summed reference log-probs of the same.
      where: ``[...]`` boolean mask of valid KL pairs.

    Returns:
      A scalar, stop-gradient, ``>= 0``.

    >>> import jax.numpy as jnp
    >>> float(kto_reference_point(jnp.array([-1.0, -3.0]), jnp.array([-2.0, -2.0])))
    0.0

    References:
      Ethayarajh et al., KTO: Model Alignment as Prospect Theoretic Optimization, 2024,
      arXiv:2402.01306 (Eq. 8 and the HALOs implementation).
    """
    p = as_float(policy_kl_logps, "policy_kl_logps")
    r = as_float(reference_kl_logps, "reference_kl_logps")
    shape = jnp.broadcast_shapes(p.shape, r.shape)
    mask = as_mask(where, shape)
    p, r = (sanitize(mask, jnp.broadcast_to(a, shape)) for a in (p, r))
    kl = reduce_losses(p - r, where=mask, reduce_fn=jnp.mean)
    return jax.lax.stop_gradient(jnp.maximum(kl, 0.0))


def kto(
    policy_logps: ArrayLike,
    reference_logps: ArrayLike,
    desirable: ArrayLike,
    reference_point: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    desirable_weight: ArrayLike = 1.0,
    undesirable_weight: ArrayLike = 1.0,
    where: Mask = None,
    reduce_fn: Callable[..., Any] | None = jnp.mean,
) -> Array:
    """Kahneman-Tversky Optimisation on unpaired examples labelled desirable or not.

    With ``r = log π_θ(y|x) - log π_ref(y|x)`` and the reference point ``z_0``:

    .. math::
        L(x, y) = \\begin{cases}
          \\lambda_D\\,\\big(1 - \\sigma(\\beta(r - z_0))\\big) & y \\text{ desirable} \\\\
          \\lambda_U\\,\\big(1 - \\sigma(\\beta(z_0 - r))\\big) & y \\text{ undesirable}
        \\end{cases}

    (Ethayarajh et al., Eq. 8), then the mean over all examples of both kinds, as HALOs
    concatenates the two groups before averaging. A batch with no desirable (or no
    undesirable) example needs no special case. ``1 - σ(z)`` is computed as ``σ(-z)``. The
    loss is bounded in ``[0, λ]``. The paper suggests ``λ_D n_D / (λ_U n_U) ∈ [1, 4/3]``.
    The same loss serves any binary-desirability signal (accepted/rejected actions).

    Args:
      policy_logps: ``[...]`` summed policy log-probs of the completions.
      reference_logps: ``[...]`` summed reference log-probs (stop-gradient).
      desirable: ``[...]`` booleans, True where the completion is desirable.
      reference_point: scalar (or ``[...]``) ``z_0``, stop-gradient; see
        :func:`kto_reference_point`.
      beta: inverse temperature.
      desirable_weight: ``λ_D``.
      undesirable_weight: ``λ_U``.
      where: ``[...]`` boolean example mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-example losses.

    Returns:
      The reduced loss, or ``[...]`` per-example losses.

    >>> import jax.numpy as jnp
    >>> float(kto(jnp.array([-1.0]), jnp.array([-1.0]), jnp.array([True]), 0.0))
    0.5

    References:
      Ethayarajh et al., KTO: Model Alignment as Prospect Theoretic Optimization, 2024,
      arXiv:2402.01306.
    """
    lp = as_float(policy_logps, "policy_logps")
    ref = jax.lax.stop_gradient(as_float(reference_logps, "reference_logps"))
    z0 = jax.lax.stop_gradient(as_float(reference_point, "reference_point"))
    desirable = jnp.asarray(desirable)
    if desirable.dtype != jnp.bool_:
        raise TypeError(f"desirable must be a boolean array, got dtype {desirable.dtype}")
    shape = jnp.broadcast_shapes(lp.shape, ref.shape, desirable.shape, z0.shape)
    mask = as_mask(where, shape)
    lp, ref, z0 = (sanitize(mask, jnp.broadcast_to(a, shape)) for a in (lp, ref, z0))
    desirable = jnp.broadcast_to(desirable, shape)
    r = lp - ref
    losses = jnp.where(
        desirable,
        desirable_weight * jax.nn.sigmoid(-beta * (r - z0)),
        undesirable_weight * jax.nn.sigmoid(-beta * (z0 - r)),
    )
    return reduce_losses(losses, where=mask, reduce_fn=reduce_fn)
