"""Token-level masked DPO (SparsePO) and the helpers that build its masks and KL terms.

Token-level inputs carry an explicit pair axis: ``[..., 2, time]`` with index 0 the chosen
and index 1 the rejected response (never an implicit ``batch // 2`` split).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxpref.losses._reduce import as_float, as_mask, reduce_losses, sanitize
from jaxpref.types import Array, ArrayLike, Mask


def token_kl_divergence(
    policy_logits: ArrayLike, reference_logits: ArrayLike, *, where: Mask = None
) -> Array:
    """Per-token ``KL(π_ref(·|prefix) ‖ π_θ(·|prefix))`` over the full vocabulary.

    .. math:: \\mathrm{KL}_t = \\sum_v \\pi_{ref}(v)\\,(\\log\\pi_{ref}(v) - \\log\\pi_\\theta(v))

    computed in float32 with ``log_softmax``; masked tokens give exactly 0. The reference
    logits are constants (stop-gradient).

    Args:
      policy_logits: ``[..., time, vocab]``.
      reference_logits: ``[..., time, vocab]``.
      where: ``[..., time]`` boolean token mask.

    Returns:
      ``[..., time]`` non-negative KL per token.

    >>> import jax.numpy as jnp
    >>> float(token_kl_divergence(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0])
    0.0
    """
    pl = as_float(policy_logits, "policy_logits")
    rl = jax.lax.stop_gradient(as_float(reference_logits, "reference_logits"))
    mask = as_mask(where, pl.shape[:-1])
    pl, rl = sanitize(mask, pl), sanitize(mask, rl)
    log_p = jax.nn.log_softmax(pl, axis=-1)
    log_r = jax.nn.log_softmax(rl, axis=-1)
    kl = jnp.sum(jnp.exp(log_r) * (log_r - log_p), axis=-1)
    return kl if mask is None else jnp.where(mask, kl, 0.0)


def activation_token_mask(activations: ArrayLike, *, token_where: ArrayLike) -> Array:
    """SparsePO's activation-based token mask from reference-model activations.

    Activations ``[..., time, hidden]`` are averaged over the hidden axis (``[..., time]`` is
    used as is), z-normalised per sequence over its valid tokens, then min-max rescaled to
    ``[0, 1]`` per sequence. The mask is a constant (stop-gradient) and 0 at invalid tokens.
    To combine several hooks (MLP, attention, residual), average their masks.

    Args:
      activations: ``[..., time]`` or ``[..., time, hidden]`` reference activations.
      token_where: ``[..., time]`` boolean mask of response tokens.

    Returns:
      ``[..., time]`` mask in ``[0, 1]``.

    References:
      Christopoulou et al., SparsePO: Controlling Preference Alignment of LLMs via Sparse
      Token Masks, 2024, arXiv:2410.05102 (official code: the MaPO trainer).
    """
    token_where = jnp.asarray(token_where, bool)
    a = as_float(activations, "activations")
    if a.ndim == token_where.ndim + 1:
        a = jnp.mean(a, axis=-1)
    a = jnp.where(token_where, a, 0.0)
    count = jnp.maximum(jnp.sum(token_where, axis=-1, keepdims=True), 1)
    mean = jnp.sum(a, axis=-1, keepdims=True) / count
    var = jnp.sum(jnp.where(token_where, (a - mean) ** 2, 0.0), axis=-1, keepdims=True) / count
    z = (a - mean) * jax.lax.rsqrt(var + 1e-6)
    low = jnp.min(jnp.where(token_where, z, jnp.inf), axis=-1, keepdims=True)
    high = jnp.max(jnp.where(token_where, z, -jnp.inf), axis=-1, keepdims=True)
    span = high - low  # -inf for a sequence with no valid token; 0 for a constant one
    ok = span > 0
    scaled = jnp.where(ok, (z - jnp.where(ok, low, 0.0)) / jnp.where(ok, span, 1.0), 1.0)
    return jax.lax.stop_gradient(jnp.where(token_where, scaled, 0.0))


def init_learned_token_mask(key: jax.Array, num_layers: int, d_model: int) -> dict[str, Array]:
    """Parameters of :func:`learned_token_mask`: per-layer projections and a layer mixer."""
    k1, k2 = jax.random.split(key)
    return {
        "layer_weights": jax.random.normal(k1, (num_layers, d_model)) / jnp.sqrt(d_model),
        "layer_biases": jnp.zeros((num_layers,)),
        "mixer": jnp.abs(jax.random.normal(k2, (num_layers,))) / num_layers,
    }


def learned_token_mask(
    params: Mapping[str, ArrayLike], reference_hidden_states: ArrayLike
) -> Array:
    """SparsePO's learned sparse token mask from the reference's per-layer hidden states.

    .. math:: m_t = \\mathrm{ReLU}\\Big(\\sum_l c_l\\,
              \\mathrm{ReLU}(w_l^\\top \\mathrm{LN}(h^{ref}_{l,t}) + b_l)\\Big)

    ReLUs make the mask sparse (exact zeros); an L1 penalty in :func:`sparse_po` adds
    pressure. The layer norm here has no learned scale, and the dropout of the official code
    is left to the caller. Gradients flow into ``params``; the hidden states are constants.

    Args:
      params: ``layer_weights [L, d_model]``, ``layer_biases [L]``, ``mixer [L]``.
      reference_hidden_states: ``[L, ..., time, d_model]`` hidden states of each layer.

    Returns:
      ``[..., time]`` non-negative mask.
    """
    h = jax.lax.stop_gradient(as_float(reference_hidden_states, "reference_hidden_states"))
    mean = jnp.mean(h, axis=-1, keepdims=True)
    h = (h - mean) * jax.lax.rsqrt(jnp.var(h, axis=-1, keepdims=True) + 1e-6)
    w = jnp.asarray(params["layer_weights"])
    b = jnp.asarray(params["layer_biases"])
    extra = (1,) * (h.ndim - 2)
    per_layer = jax.nn.relu(jnp.einsum("l...d,ld->l...", h, w) + b.reshape(-1, *extra))
    mixer = jnp.asarray(params["mixer"]).reshape(-1, *extra)
    return jax.nn.relu(jnp.sum(mixer * per_layer, axis=0))


def sparse_po(
    policy_token_logps: ArrayLike,
    reference_token_logps: ArrayLike,
    reward_mask: ArrayLike,
    *,
    kl_mask: ArrayLike | None = None,
    token_kl: ArrayLike | None = None,
    token_where: ArrayLike | None = None,
    beta: ArrayLike = 0.1,
    l1_reward: ArrayLike = 0.0,
    l1_kl: ArrayLike = 0.0,
    where: Mask = None,
    reduce_fn: Callable[..., Any] | None = jnp.mean,
) -> Array:
    """SparsePO: token-level DPO whose reward and KL terms are weighted by token masks.

    Per response ``y``, with ``ℓ_t = log π_θ(y_t|·) - log π_ref(y_t|·)`` and the per-token
    ``KL_t = KL(π_ref ‖ π_θ)`` at step ``t`` (:func:`token_kl_divergence`):

    .. math::
        U(y) = \\sum_t m^u_t\\,\\ell_t,\\qquad K(y) = \\sum_t m^d_t\\,\\mathrm{KL}_t

        L = -\\log\\sigma\\big(\\beta\\,[U(y_w) - U(y_l) - (K(y_l) - K(y_w))]\\big)
            + \\lambda_u (\\|m^u_w\\|_1 + \\|m^u_l\\|_1)
            + \\lambda_d (\\|m^d_w\\|_1 + \\|m^d_l\\|_1)

    This is TDPO's sequential-KL objective with per-token masks, as in the official SparsePO
    trainer (sums over response tokens, no length normalisation; the code writes the KL
    term as ``Σ π_ref (log π_θ - log π_ref) = -KL_t``). Mask kinds:

    * activation-based (MaPO-style): :func:`activation_token_mask` of reference activations,
      one common mask for both terms (``kl_mask=None``), stop-gradient;
    * learned: :func:`learned_token_mask`, common or independent for the two terms;
      gradients flow into the mask parameters, with the L1 penalties pushing towards sparsity.

    With ``token_kl=None`` the KL term is dropped (masked token-level DPO); with all-ones
    masks and no KL term it equals DPO on summed log-probs.

    Args:
      policy_token_logps: ``[..., 2, time]`` policy log-probs of the realised tokens
        (chosen at index 0 of the pair axis, rejected at 1).
      reference_token_logps: ``[..., 2, time]`` reference log-probs (stop-gradient).
      reward_mask: ``[..., 2, time]`` mask ``m^u`` (values in ``[0, 1]`` or non-negative).
      kl_mask: ``[..., 2, time]`` mask ``m^d``; None uses ``reward_mask`` (common mask).
      token_kl: ``[..., 2, time]`` per-token ``KL(π_ref ‖ π_θ)``, or None to drop the term.
      token_where: ``[..., 2, time]`` boolean mask of response tokens.
      beta: inverse temperature (official defaults 0.1; 0.8 for IMDB/TL;DR in its README).
      l1_reward: L1 weight ``λ_u`` on the reward mask.
      l1_kl: L1 weight ``λ_d`` on the KL mask.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    References:
      Christopoulou et al., SparsePO: Controlling Preference Alignment of LLMs via Sparse
      Token Masks, 2024, arXiv:2410.05102 (official code huawei-noah/HEBO, SparsePO/).
      Zeng et al., Token-level Direct Preference Optimization, 2024, arXiv:2404.11999.
    """
    lp = as_float(policy_token_logps, "policy_token_logps")
    if lp.ndim < 2 or lp.shape[-2] != 2:
        raise ValueError(
            f"policy_token_logps must have shape [..., 2, time] (chosen, rejected), got {lp.shape}"
        )
    batch_shape = lp.shape[:-2]
    ref = jax.lax.stop_gradient(as_float(reference_token_logps, "reference_token_logps"))
    mu = as_float(reward_mask, "reward_mask")
    md = mu if kl_mask is None else as_float(kl_mask, "kl_mask")
    kl = None if token_kl is None else as_float(token_kl, "token_kl")
    pair_mask = as_mask(where, batch_shape)
    tokens = (
        jnp.ones(lp.shape, bool)
        if token_where is None
        else as_mask(token_where, lp.shape, "token_where")
    )
    if pair_mask is not None:
        tokens = tokens & pair_mask[..., None, None]

    def clean(x: Array) -> Array:
        return jnp.where(tokens, jnp.broadcast_to(x, lp.shape), 0.0)

    lp, ref, mu, md = clean(lp), clean(ref), clean(mu), clean(md)
    u = jnp.sum(mu * (lp - ref), axis=-1)  # [..., 2]
    z = u[..., 0] - u[..., 1]
    if kl is not None:
        k = jnp.sum(md * clean(kl), axis=-1)
        z = z - (k[..., 1] - k[..., 0])
    losses = jax.nn.softplus(-beta * z)
    losses = losses + l1_reward * jnp.sum(jnp.abs(mu), axis=(-2, -1))
    if kl is not None:
        losses = losses + l1_kl * jnp.sum(jnp.abs(md), axis=(-2, -1))
    return reduce_losses(losses, where=pair_mask, reduce_fn=reduce_fn)
