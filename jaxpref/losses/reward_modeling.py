"""Reward-model losses: Bradley-Terry and the recipes of "Secrets of RLHF Part II".

The recipes use the ensemble *preference strength* ``μ̂`` of each pair (see
:func:`jaxpref.metrics.preference_strength`): a low or negative ``μ̂`` flags pairs whose label
is probably wrong (the paper's lowest 20%) or ambiguous.

* **Flip**: swap chosen and rejected for pairs with ``μ̂`` below a threshold. The paper flips
  the lowest 20% by strength, i.e. ``flip_below = jnp.quantile(all_strengths, 0.2)``.
* **Soft label** (Eq. 5): label smoothing ``α`` on pairs with ``μ̂`` below a threshold (the
  paper's "Soft Label + Margin" smooths only pairs with ``μ̂ < 0``).
* **Adaptive margin** (Eq. 6): ``μ̂`` as a per-pair margin inside the log-sigmoid.

They compose: a flipped pair's strength becomes ``-μ̂`` before smoothing and margin apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxpref.losses._reduce import as_float, as_mask, check_static_range, reduce_losses, sanitize
from jaxpref.losses.pairwise import ReduceArg, sigmoid_cross_entropy
from jaxpref.types import Array, ArrayLike, Mask


def bradley_terry(
    chosen_rewards: ArrayLike,
    rejected_rewards: ArrayLike,
    *,
    margin: ArrayLike = 0.0,
    label_smoothing: ArrayLike = 0.0,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Bradley-Terry reward-model loss with the Llama-2 margin and optional label smoothing.

    .. math::
        L = -(1-\\alpha)\\log\\sigma(r_c - r_r - m) - \\alpha\\log\\sigma(-(r_c - r_r - m))

    ``m`` is a scalar or per-pair margin inside the log-sigmoid (Llama 2, Eq. 2; also the
    adaptive margin of "Secrets of RLHF Part II" when ``m`` is the ensemble preference
    strength). ``α`` is label smoothing (Secrets II, Eq. 5), scalar or per pair. Margins and
    smoothing are constants (stop-gradient).

    Args:
      chosen_rewards: ``[...]`` rewards of the chosen responses.
      rejected_rewards: ``[...]`` rewards of the rejected responses.
      margin: scalar or ``[...]`` margin ``m``.
      label_smoothing: scalar or ``[...]`` smoothing ``α`` in ``[0, 1]``.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> round(float(bradley_terry(jnp.array([1.0]), jnp.array([1.0]))), 4)
    0.6931

    References:
      Bradley & Terry, Rank Analysis of Incomplete Block Designs, 1952.
      Touvron et al., Llama 2: Open Foundation and Fine-Tuned Chat Models, 2023,
      arXiv:2307.09288.
      Wang et al., Secrets of RLHF in Large Language Models Part II: Reward Modeling, 2024,
      arXiv:2401.06080.
    """
    rc = as_float(chosen_rewards, "chosen_rewards")
    rr = as_float(rejected_rewards, "rejected_rewards")
    m = jax.lax.stop_gradient(as_float(margin, "margin"))
    alpha = jax.lax.stop_gradient(as_float(label_smoothing, "label_smoothing"))
    shape = jnp.broadcast_shapes(rc.shape, rr.shape, m.shape, alpha.shape)
    mask = as_mask(where, shape)
    rc, rr, m, alpha = (sanitize(mask, jnp.broadcast_to(a, shape)) for a in (rc, rr, m, alpha))
    check_static_range(alpha, "label_smoothing", low=0.0, high=1.0)
    losses = sigmoid_cross_entropy(rc - rr - m, alpha)
    return reduce_losses(losses, where=mask, reduce_fn=reduce_fn)


def flip_low_strength(
    chosen_rewards: ArrayLike,
    rejected_rewards: ArrayLike,
    strength: ArrayLike,
    *,
    flip_below: ArrayLike,
) -> tuple[Array, Array, Array, Array]:
    """Swaps chosen and rejected where ``strength < flip_below``.

    Args:
      chosen_rewards: ``[...]`` rewards of the labelled-chosen responses.
      rejected_rewards: ``[...]`` rewards of the labelled-rejected responses.
      strength: ``[...]`` ensemble preference strength ``μ̂`` (chosen minus rejected).
      flip_below: threshold; e.g. ``jnp.quantile(dataset_strengths, 0.2)`` for the paper's
        lowest 20%.

    Returns:
      ``(chosen, rejected, strength, flipped)`` after flipping; a flipped pair's strength is
      negated so that it is measured for the new order.

    >>> import jax.numpy as jnp
    >>> c, r, s, f = flip_low_strength(jnp.array([1.0, 2.0]), jnp.array([0.0, 3.0]),
    ...                                jnp.array([0.5, -1.0]), flip_below=0.0)
    >>> c.tolist(), r.tolist(), s.tolist(), f.tolist()
    ([1.0, 3.0], [0.0, 2.0], [0.5, 1.0], [False, True])
    """
    rc = as_float(chosen_rewards, "chosen_rewards")
    rr = as_float(rejected_rewards, "rejected_rewards")
    mu = jax.lax.stop_gradient(as_float(strength, "strength"))
    shape = jnp.broadcast_shapes(rc.shape, rr.shape, mu.shape)
    rc, rr, mu = (jnp.broadcast_to(x, shape) for x in (rc, rr, mu))
    flipped = mu < flip_below
    return (
        jnp.where(flipped, rr, rc),
        jnp.where(flipped, rc, rr),
        jnp.where(flipped, -mu, mu),
        flipped,
    )


def strength_recipe_loss(
    chosen_rewards: ArrayLike,
    rejected_rewards: ArrayLike,
    strength: ArrayLike,
    *,
    flip_below: ArrayLike | None = None,
    soft_label: ArrayLike = 0.0,
    soft_label_below: ArrayLike = 0.0,
    adaptive_margin: bool = False,
    where: Mask = None,
    reduce_fn: Callable[..., Any] | None = jnp.mean,
) -> Array:
    """Bradley-Terry loss with the strength-aware recipes of Secrets of RLHF Part II.

    After an optional flip (``μ̂ < flip_below``), with ``z = r_c - r_r - m``:

    .. math:: L = -(1-\\alpha_i)\\log\\sigma(z) - \\alpha_i\\log\\sigma(-z),\\quad
              \\alpha_i = \\alpha\\,[\\hat\\mu_i < \\text{soft\\_label\\_below}],\\quad
              m = \\hat\\mu_i \\text{ if adaptive\\_margin else } 0

    (Wang et al., Eq. 5 for the smoothing and Eq. 6 for the margin, which sits inside the
    log-sigmoid as in Llama 2). The paper's recipes: *Flip* (``flip_below``), *Margin*
    (``adaptive_margin=True``), *Flip + Margin*, and *Soft Label + Margin*
    (``soft_label=α, soft_label_below=0, adaptive_margin=True``). The paper does not give
    ``α``; our default is 0 (off). When smoothing and margin are both on, the margin enters
    the smoothed term's logit (our reading; the paper does not spell out the combination).
    ``μ̂`` is a constant (stop-gradient).

    Args:
      chosen_rewards: ``[...]`` rewards of labelled-chosen responses.
      rejected_rewards: ``[...]`` rewards of labelled-rejected responses.
      strength: ``[...]`` ensemble preference strength ``μ̂`` of each pair.
      flip_below: flip pairs with ``μ̂ < flip_below``; None disables flipping.
      soft_label: smoothing ``α`` in ``[0, 1]``.
      soft_label_below: smooth only pairs whose (post-flip) ``μ̂`` is below this
        (``jnp.inf`` smooths every pair).
      adaptive_margin: use ``μ̂`` (post-flip) as the margin.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> loss = strength_recipe_loss(jnp.array([1.0]), jnp.array([0.0]), jnp.array([1.0]),
    ...                             adaptive_margin=True)
    >>> round(float(loss), 4)  # margin 1 cancels the reward gap: log 2
    0.6931

    References:
      Wang et al., Secrets of RLHF in Large Language Models Part II: Reward Modeling, 2024,
      arXiv:2401.06080, Sec. 3 (Eqs. 4-6).
    """
    check_static_range(soft_label, "soft_label", low=0.0, high=1.0)
    rc = as_float(chosen_rewards, "chosen_rewards")
    rr = as_float(rejected_rewards, "rejected_rewards")
    mu = as_float(strength, "strength")
    shape = jnp.broadcast_shapes(rc.shape, rr.shape, mu.shape)
    mask = as_mask(where, shape)
    rc, rr, mu = (sanitize(mask, jnp.broadcast_to(x, shape)) for x in (rc, rr, mu))
    if flip_below is not None:
        rc, rr, mu, _ = flip_low_strength(rc, rr, mu, flip_below=flip_below)
    mu = jax.lax.stop_gradient(mu)
    alpha = jnp.where(mu < soft_label_below, soft_label, 0.0)
    margin = mu if adaptive_margin else 0.0
    return bradley_terry(
        rc, rr, margin=margin, label_smoothing=alpha, where=mask, reduce_fn=reduce_fn
    )
