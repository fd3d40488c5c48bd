"""InfiFPO: DPO whose reference is a sequence-level fusion of several source models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxpref.losses._reduce import as_float
from jaxpref.losses.pairwise import logratio_loss
from jaxpref.types import Array, ArrayLike, Mask

FUSIONS = ("mean", "max_margin")


def fused_reference_logps(
    source_chosen_logps: ArrayLike,
    source_rejected_logps: ArrayLike,
    *,
    fusion: str = "mean",
    weights: ArrayLike | None = None,
    pivot_chosen_logps: ArrayLike | None = None,
    pivot_rejected_logps: ArrayLike | None = None,
) -> tuple[Array, Array]:
    """Fuses per-source sequence log-probs into one reference (stop-gradient).

    Working at sequence level avoids aligning the sources' vocabularies: each source scores
    the response text with its own tokenizer (use length-averaged log-probs, since token
    counts differ across tokenizers).

    * Probability clipping (when pivot log-probs are given): a source may not be *worse* than
      the pivot (the policy's initial model): ``ℓ̃_s(y_w) = max(ℓ_s(y_w), ℓ_p(y_w))`` and
      ``ℓ̃_s(y_l) = min(ℓ_s(y_l), ℓ_p(y_l))``.
    * ``fusion="mean"``: ``ℓ_fu = Σ_s w_s ℓ̃_s`` (uniform ``w`` by default).
    * ``fusion="max_margin"``: per pair, the source with the largest preference margin
      ``ℓ̃_s(y_w) - ℓ̃_s(y_l)``.

    Provenance: the paper (arXiv:2505.13878) names length normalisation, probability clipping
    and max-margin fusion; its released ``run.sh`` uses averaged log-probs with ``β = 2.5``
    (``β = 0.1`` with summed ones) and ``FUSION_TYPE=mean``. The exact clipping and
    max-margin equations of its method section could not be retrieved here; the two rules
    above are our reading of the paper's description and may differ in detail.

    Args:
      source_chosen_logps: ``[..., S]`` log-probs of the chosen response under S sources.
      source_rejected_logps: ``[..., S]`` the same for the rejected response.
      fusion: ``"mean"`` or ``"max_margin"``.
      weights: ``[S]`` fusion weights for ``"mean"`` (normalised to sum to 1).
      pivot_chosen_logps: ``[...]`` pivot log-probs of the chosen response, enabling clipping.
      pivot_rejected_logps: ``[...]`` pivot log-probs of the rejected response.

    Returns:
      ``(fused_chosen, fused_rejected)``, each ``[...]``.

    >>> import jax.numpy as jnp
    >>> c, r = fused_reference_logps(jnp.array([[-1.0, -3.0]]), jnp.array([[-2.0, -2.0]]))
    >>> c.tolist(), r.tolist()
    ([-2.0], [-2.0])
    """
    sc = as_float(source_chosen_logps, "source_chosen_logps")
    sr = as_float(source_rejected_logps, "source_rejected_logps")
    if sc.shape != sr.shape or sc.ndim < 1:
        raise ValueError(
            "source_chosen_logps and source_rejected_logps must have the same shape [..., S], "
            f"got {sc.shape} and {sr.shape}"
        )
    if (pivot_chosen_logps is None) != (pivot_rejected_logps is None):
        raise ValueError("pass both pivot_chosen_logps and pivot_rejected_logps, or neither")
    if pivot_chosen_logps is not None:
        pc = as_float(pivot_chosen_logps, "pivot_chosen_logps")[..., None]
        pr = as_float(pivot_rejected_logps, "pivot_rejected_logps")[..., None]
        sc, sr = jnp.maximum(sc, pc), jnp.minimum(sr, pr)
    if fusion == "mean":
        num_sources = sc.shape[-1]
        w = (
            jnp.full((num_sources,), 1.0 / num_sources)
            if weights is None
            else as_float(weights, "weights")
        )
        w = w / jnp.sum(w)
        fused = (jnp.sum(sc * w, axis=-1), jnp.sum(sr * w, axis=-1))
    elif fusion == "max_margin":
        best = jnp.argmax(sc - sr, axis=-1)[..., None]
        fused = (
            jnp.take_along_axis(sc, best, axis=-1)[..., 0],
            jnp.take_along_axis(sr, best, axis=-1)[..., 0],
        )
    else:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    return jax.lax.stop_gradient(fused[0]), jax.lax.stop_gradient(fused[1])


def infifpo(
    policy_chosen_logps: ArrayLike,
    policy_rejected_logps: ArrayLike,
    source_chosen_logps: ArrayLike,
    source_rejected_logps: ArrayLike,
    *,
    beta: ArrayLike = 0.1,
    fusion: str = "mean",
    weights: ArrayLike | None = None,
    pivot_chosen_logps: ArrayLike | None = None,
    pivot_rejected_logps: ArrayLike | None = None,
    where: Mask = None,
    reduce_fn: Callable[..., Any] | None = jnp.mean,
) -> Array:
    """InfiFPO: DPO with the reference replaced by a fused source model.

    .. math:: L = -\\log\\sigma\\Big(\\beta\\big[(\\ell_\\theta(y_w) - \\ell_{fu}(y_w))
              - (\\ell_\\theta(y_l) - \\ell_{fu}(y_l))\\big]\\Big)

    with ``ℓ_fu`` from :func:`fused_reference_logps` (stop-gradient). Pass length-averaged
    log-probs for policy and sources (the paper's length normalisation; its script then uses
    ``β = 2.5``) or summed ones (``β = 0.1``). Masked pairs are sanitised before fusion.

    Args:
      policy_chosen_logps: ``[...]`` policy log-probs of chosen responses.
      policy_rejected_logps: ``[...]`` policy log-probs of rejected responses.
      source_chosen_logps: ``[..., S]`` source-model log-probs of chosen responses.
      source_rejected_logps: ``[..., S]`` source-model log-probs of rejected responses.
      beta: inverse temperature.
      fusion: ``"mean"`` or ``"max_margin"``.
      weights: ``[S]`` weights of the mean fusion.
      pivot_chosen_logps: ``[...]`` pivot log-probs enabling probability clipping.
      pivot_rejected_logps: ``[...]`` pivot log-probs enabling probability clipping.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> x = jnp.array([-2.0])
    >>> s = jnp.array([[-2.0, -2.0]])
    >>> round(float(infifpo(x, x, s, s)), 4)
    0.6931

    References:
      Gu et al., InfiFPO: Implicit Model Fusion via Preference Optimization in Large Language
      Models, 2025, arXiv:2505.13878.
    """
    sc = as_float(source_chosen_logps, "source_chosen_logps")
    sr = as_float(source_rejected_logps, "source_rejected_logps")
    if where is not None:
        keep = jnp.asarray(where, bool)[..., None]
        sc, sr = jnp.where(keep, sc, 0.0), jnp.where(keep, sr, 0.0)
        if pivot_chosen_logps is not None and pivot_rejected_logps is not None:
            keep1 = jnp.asarray(where, bool)
            pivot_chosen_logps = jnp.where(keep1, as_float(pivot_chosen_logps, "pivot"), 0.0)
            pivot_rejected_logps = jnp.where(keep1, as_float(pivot_rejected_logps, "pivot"), 0.0)
    fused_chosen, fused_rejected = fused_reference_logps(
        sc,
        sr,
        fusion=fusion,
        weights=weights,
        pivot_chosen_logps=pivot_chosen_logps,
        pivot_rejected_logps=pivot_rejected_logps,
    )
    return logratio_loss(
        policy_chosen_logps,
        policy_rejected_logps,
        fused_chosen,
        fused_rejected,
        margin_loss_fn=lambda h: jax.nn.softplus(-beta * h),
        where=where,
        reduce_fn=reduce_fn,
    )
