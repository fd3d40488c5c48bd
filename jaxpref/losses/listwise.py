"""Listwise preference objectives: Plackett-Luce (ListMLE, PL-DPO), ListNet and PRO.

Every objective follows rax: ``(scores, labels, *, where=None, weights=None,
reduce_fn=jnp.mean)``. The last axis is the list (``[..., list_size]``), leading axes are
batch axes, and a higher label means a better item. ``where`` masks list items (padding):
a masked item contributes nothing, not even NaN gradients, whatever its inputs hold (pad
scores with ``-inf`` freely, but say so with ``where``). ``weights`` (``[..., list_size]``,
or ``[..., 1]`` per list) multiply the terms in which an item is the preferred one.
Per-list losses are reduced over the lists that contribute; a list with fewer than two
valid items contributes nothing and is not counted by ``jnp.mean``. Labels are constants
(stop-gradient); everything is computed in float32 (bfloat16 inputs are cast up).

For policy training the scores are implicit rewards, ``beta * (policy_logps -
reference_logps)`` per response: see :func:`logratio_scores`.

The pairwise-from-list objectives (LiPO-λ, RankList) are in :mod:`jaxpref.losses.ranking`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpref.losses._reduce import as_float, as_mask, is_traced, reduce_losses, sanitize
from jaxpref.types import Array, ArrayLike, Mask

ReduceArg = Callable[..., Any] | None


# --------------------------------------------------------------------------- helpers


def _list_inputs(
    scores: ArrayLike,
    labels: ArrayLike,
    where: Mask,
    weights: ArrayLike | None,
    *,
    names: tuple[str, str] = ("scores", "labels"),
) -> tuple[Array, Array, Array, Array]:
    """Casts, broadcasts and sanitises list inputs.

    Returns ``(scores, labels, valid, weights)`` of one shape ``[..., list_size]``; masked
    entries are replaced by 0 before any arithmetic, labels are stop-gradient and
    ``weights`` is all ones when None.
    """
    s = as_float(scores, names[0])
    y = jax.lax.stop_gradient(as_float(labels, names[1]))
    shape = jnp.broadcast_shapes(s.shape, y.shape)
    if len(shape) < 1:
        raise ValueError(f"{names[0]} and {names[1]} must have shape [..., list_size], got {shape}")
    valid = as_mask(where, shape)
    valid = jnp.ones(shape, bool) if valid is None else valid
    s = sanitize(valid, jnp.broadcast_to(s, shape))
    y = sanitize(valid, jnp.broadcast_to(y, shape))
    if weights is None:
        w = jnp.ones(shape, s.dtype)
    else:
        w = sanitize(valid, jnp.broadcast_to(as_float(weights, "weights"), shape))
    return s, y, valid, w


def _positions(order_by: Array, valid: Array, tiebreak: Array | None = None) -> Array:
    """0-based position of each item when sorting by ``order_by`` descending.

    Valid items come first (positions ``0 .. n_valid - 1``, all distinct); ties are broken
    by ``tiebreak`` (smaller first) and then by index, so without ``tiebreak`` tied items
    keep their input order (a stable sort, as rax). Masked items all get ``n_valid``.
    Integer-valued, hence constant under differentiation.
    """
    x = jax.lax.stop_gradient(order_by)
    x_i, x_j = x[..., :, None], x[..., None, :]
    index = jnp.arange(x.shape[-1])
    j_first = index[None, :] < index[:, None]
    if tiebreak is not None:
        t_i, t_j = tiebreak[..., :, None], tiebreak[..., None, :]
        j_first = (t_j < t_i) | ((t_j == t_i) & j_first)
    ahead = (x_j > x_i) | ((x_j == x_i) & j_first)
    before = valid[..., None, :] & (~valid[..., :, None] | ahead)  # [..., i, j]: j before i
    return jnp.sum(before, axis=-1)


def _masked_logsumexp(x: Array, mask: Array) -> tuple[Array, Array]:
    """``log Σ_{mask} exp(x)`` over the last axis, and whether any entry is unmasked.

    Stable for any finite ``x`` (shifted by the masked row max, a constant); rows with no
    unmasked entry give 0 with zero, finite gradients (never ``-inf - -inf``).
    """
    mask = jnp.broadcast_to(mask, x.shape)
    any_ = jnp.any(mask, axis=-1)
    top = jnp.max(jnp.where(mask, x, -jnp.inf), axis=-1, keepdims=True)
    top = jax.lax.stop_gradient(jnp.where(jnp.isfinite(top), top, 0.0))
    total = jnp.sum(jnp.exp(jnp.where(mask, x - top, -jnp.inf)), axis=-1)
    lse = jnp.log(jnp.where(any_, total, 1.0)) + top[..., 0]
    return jnp.where(any_, lse, 0.0), any_


def _reduce_lists(per_list: Array, list_valid: Array, reduce_fn: ReduceArg) -> Array:
    """Reduces per-list losses (already 0 where ``list_valid`` is False) over counted lists."""
    return reduce_losses(per_list, where=list_valid, reduce_fn=reduce_fn)


def _array(x: Any) -> Any:
    """``jnp.asarray`` for the jitted kernels' array arguments (None stays None)."""
    return None if x is None else jnp.asarray(x)


def _kernel(*, static_argnames: tuple[str, ...] = ()) -> Callable[..., Any]:
    """Jits an objective's array work (as ``jax.nn`` functions are jitted).

    An eager call then compiles once per shape instead of dispatching op by op; inside a
    caller's ``jit`` the kernel is inlined. Option checks and ``reduce_fn`` stay outside.
    """
    return functools.partial(jax.jit, static_argnames=static_argnames)


def _check_positive(value: Any, name: str) -> None:
    if not is_traced(value) and not np.all(np.asarray(value, np.float64) > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")


# --------------------------------------------------------------------------- scores


def logratio_scores(
    policy_logps: ArrayLike,
    reference_logps: ArrayLike | None,
    *,
    beta: ArrayLike = 0.1,
    where: Mask = None,
) -> Array:
    """Per-response implicit rewards ``β (log π_θ(y) - log π_ref(y))``, the listwise scores.

    The reference log-probs are constants (``stop_gradient``); ``None`` is reference-free
    (``β log π_θ(y)``). Masked responses get score 0 and no gradient (sanitised first), so
    padded responses may hold ``-inf`` log-probs.

    Args:
      policy_logps: ``[..., list_size]`` summed sequence log-probs under the policy.
      reference_logps: ``[..., list_size]`` the same under the frozen reference, or None.
      beta: inverse temperature (scalar or broadcastable).
      where: ``[..., list_size]`` boolean mask of real responses.

    Returns:
      ``[..., list_size]`` float32 scores, to pass as ``scores`` to the listwise objectives.

    >>> import jax.numpy as jnp
    >>> logratio_scores(jnp.array([[-3.0, -5.0]]), jnp.array([[-4.0, -4.0]]), beta=0.5).tolist()
    [[0.5, -0.5]]

    References:
      Rafailov et al., Direct Preference Optimization: Your Language Model is Secretly a
      Reward Model, 2023, arXiv:2305.18290 (the implicit reward, and its appendix
      derivation for Plackett-Luce rankings).
    """
    lp = as_float(policy_logps, "policy_logps")
    if reference_logps is None:
        ref = jnp.zeros((), lp.dtype)
    else:
        ref = jax.lax.stop_gradient(as_float(reference_logps, "reference_logps"))
    shape = jnp.broadcast_shapes(lp.shape, ref.shape)
    mask = as_mask(where, shape)
    lp, ref = (sanitize(mask, jnp.broadcast_to(a, shape)) for a in (lp, ref))
    return beta * (lp - ref)


# --------------------------------------------------------------------------- objectives


def plackett_luce(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    top_k: int | None = None,
    key: jax.Array | None = None,
    where: Mask = None,
    weights: ArrayLike | None = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Plackett-Luce negative log-likelihood of the label order (ListMLE; PL-DPO).

    With ``π`` the valid items sorted by label (best first) and ``n`` their number,

    .. math::
        L = \\sum_{k=1}^{\\min(K', n-1)} w_{\\pi(k)} \\Big[\\log \\sum_{j \\ge k}
            e^{s_{\\pi(j)}} - s_{\\pi(k)}\\Big]

    (ListMLE, Xia et al.; the last position's term is identically 0). ``top_k = K'`` keeps
    the first ``K'`` positions only (top-k PL), otherwise the full list. With scores
    ``β (log π_θ - log π_ref)`` (:func:`logratio_scores`) this is the Plackett-Luce DPO
    objective (Rafailov et al., the appendix's Plackett-Luce derivation).

    Ties: the PL model needs a strict order. By default tied items keep their input order
    (a stable sort, as ``rax.listmle_loss`` without a key), so the value is deterministic
    but depends on where tied items sit in the list. With ``key``, ties are broken
    uniformly at random; averaging over keys gives the tie-averaged loss, the mean of the
    loss over all orders of the tied items. Under ``vmap`` over examples pass one key per
    example. Labels are not differentiated.

    Args:
      scores: ``[..., list_size]`` item scores (higher = predicted better).
      labels: ``[..., list_size]`` graded labels (higher = better).
      top_k: number of leading positions scored (``>= 1``), or None for the full list.
      key: optional PRNG key for random tie-breaking.
      where: ``[..., list_size]`` boolean mask of valid items.
      weights: ``[..., list_size]`` weight of the term in which an item is chosen.
      reduce_fn: ``jnp.mean`` over contributing lists by default; ``None`` gives per-list
        losses ``[...]``.

    Returns:
      The reduced loss, or ``[...]`` per-list losses.

    >>> import jax.numpy as jnp
    >>> loss = plackett_luce(jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 0.0]]))
    >>> round(float(loss), 4)  # log 2: two equal scores
    0.6931

    References:
      Plackett, The Analysis of Permutations, 1975; Luce, Individual Choice Behavior, 1959.
      Xia et al., Listwise Approach to Learning to Rank: Theory and Algorithm, ICML 2008.
      Rafailov et al., Direct Preference Optimization, 2023, arXiv:2305.18290.
    """
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    args = (_array(scores), _array(labels), _array(where), _array(weights), key)
    return _reduce_lists(*_plackett_luce(*args, top_k=top_k), reduce_fn)


@_kernel(static_argnames=("top_k",))
def _plackett_luce(scores, labels, where, weights, key, *, top_k):
    s, y, valid, w = _list_inputs(scores, labels, where, weights)
    tiebreak = None if key is None else jax.random.uniform(key, s.shape)
    pos = _positions(y, valid, tiebreak)
    n = jnp.sum(valid, axis=-1, keepdims=True)
    remaining = valid[..., None, :] & (pos[..., None, :] >= pos[..., :, None])  # [.., i, j]
    lse, _ = _masked_logsumexp(jnp.broadcast_to(s[..., None, :], remaining.shape), remaining)
    chosen = valid & (pos < n - 1)
    if top_k is not None:
        chosen = chosen & (pos < top_k)
    per_list = jnp.sum(jnp.where(chosen, w * (lse - s), 0.0), axis=-1)
    counted = n[..., 0] >= 2
    return jnp.where(counted, per_list, 0.0), counted


def listnet(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    label_temperature: ArrayLike = 1.0,
    where: Mask = None,
    weights: ArrayLike | None = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """ListNet: top-one cross-entropy between label and score softmaxes over valid items.

    .. math::
        L = -\\sum_i w_i\\, \\mathrm{softmax}(\\psi / T)_i \\, \\log \\mathrm{softmax}(s)_i

    with both softmaxes over the valid items of the list (Cao et al., the top-one
    probability model with an exponential φ); ``T`` is the label temperature. With one-hot
    labels and ``T → 0`` this is the softmax (InfoNCE) cross-entropy. Both softmaxes are
    computed as log-softmax (logsumexp) forms; labels are constants.

    Args:
      scores: ``[..., list_size]`` item scores.
      labels: ``[..., list_size]`` graded labels (higher = better).
      label_temperature: ``T > 0``; smaller sharpens the target distribution.
      where: ``[..., list_size]`` boolean mask of valid items.
      weights: ``[..., list_size]`` per-item weights of the cross-entropy terms.
      reduce_fn: ``jnp.mean`` over lists with at least two valid items by default;
        ``None`` gives per-list losses ``[...]``.

    Returns:
      The reduced loss, or ``[...]`` per-list losses.

    >>> import jax.numpy as jnp
    >>> loss = listnet(jnp.array([[1.0, 2.0]]), jnp.array([[1.0, 2.0]]))
    >>> round(float(loss), 4)  # cross-entropy of a distribution with itself: its entropy
    0.5822

    References:
      Cao et al., Learning to Rank: From Pairwise Approach to Listwise Approach, ICML 2007.
    """
    _check_positive(label_temperature, "label_temperature")
    args = (_array(scores), _array(labels), _array(where), _array(weights))
    return _reduce_lists(*_listnet(*args, _array(label_temperature)), reduce_fn)


@_kernel()
def _listnet(scores, labels, where, weights, label_temperature):
    s, y, valid, w = _list_inputs(scores, labels, where, weights)
    target_logits = y / label_temperature
    log_target = target_logits - _masked_logsumexp(target_logits, valid)[0][..., None]
    log_q = s - _masked_logsumexp(s, valid)[0][..., None]
    terms = jnp.where(valid, w * jnp.exp(log_target) * log_q, 0.0)
    counted = jnp.sum(valid, axis=-1) >= 2
    return jnp.where(counted, -jnp.sum(terms, axis=-1), 0.0), counted


def pro(
    policy_scores: ArrayLike,
    rewards: ArrayLike,
    *,
    sft_weight: ArrayLike = 0.05,
    sft_logps: ArrayLike | None = None,
    where: Mask = None,
    weights: ArrayLike | None = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """Preference Ranking Optimization: best-vs-rest softmaxes with reward-gap temperatures.

    Sort the ``n`` valid responses by reward, ``y^1 ≻ … ≻ y^n``. Stage ``k`` asks
    ``y^k`` to beat every later response, each logit scaled by its reward gap:

    .. math::
        L = \\sum_{k=1}^{n-1} \\Big[\\log\\Big(e^{s_k t_k} + \\sum_{i>k} e^{s_i\\,
            (r_k - r_i)}\\Big) - s_k t_k\\Big] - \\lambda (n-1)^2 \\log \\pi_\\theta(y^1),
        \\qquad t_k = \\max_{i>k}(r_k - r_i)

    Here ``s`` are the policy's length-normalised log-probs and ``r`` the reward-model
    scores (constants). The paper writes the gaps as dynamic temperatures
    ``T_k^i = 1/(r_k - r_i)`` and ``T_k^k = min_{i>k} T_k^i``. The last term is the
    supervised (NLL) loss on the best response.

    Provenance: this follows the official code, AlibabaResearch/DAMO-ConvAI
    ``PRO/train/utils/process_manager.py::ProcessManager.compute_loss``. Its facts:
    ``scores`` are summed token log-probs divided by the response length;
    ``neg_temperatures = r_k - r_{>k}``; ``pos_temperature`` is their max. Each stage
    loss is ``log(Σ exp) - s_k * pos_temperature``, the stages are summed, and the SFT
    term is ``sft_weight * (n-1)**2 * mean(-sum_logps[best])`` on *summed* log-probs
    (pass them as ``sft_logps``). ``sft_weight = 0.05`` is the value in the official
    ``train_hh.sh`` (``utils/config.py`` defaults to 2). The code lists come pre-sorted
    by reward (``step_2_gen_train_data.py``); here they are sorted internally. Tied
    rewards give a zero gap, so the tied response enters its stage's denominator with
    logit 0, as in the code. Tied responses keep their input order. With masks, ``n`` is
    the number of valid responses of each list.

    Args:
      policy_scores: ``[..., list_size]`` length-normalised policy log-probs
        ``log π_θ(y) / |y|`` (differentiable).
      rewards: ``[..., list_size]`` reward-model scores (higher = better; constants).
      sft_weight: ``λ``, weight of the SFT term (0 disables it).
      sft_logps: ``[..., list_size]`` log-probs used in the SFT term (the official code uses
        summed log-probs); None uses ``policy_scores``.
      where: ``[..., list_size]`` boolean mask of valid responses.
      weights: ``[..., list_size]`` weight of the stage (and SFT term) in which a response is
        the positive.
      reduce_fn: ``jnp.mean`` over lists with at least two valid responses by default;
        ``None`` gives per-list losses ``[...]``.

    Returns:
      The reduced loss, or ``[...]`` per-list losses.

    >>> import jax.numpy as jnp
    >>> loss = pro(jnp.array([[0.0, 0.0]]), jnp.array([[1.0, 0.0]]), sft_weight=0.0)
    >>> round(float(loss), 4)  # log(e^0 + e^0) - 0
    0.6931

    References:
      Song et al., Preference Ranking Optimization for Human Alignment, AAAI 2024,
      arXiv:2306.17492.
    """
    args = (_array(policy_scores), _array(rewards), _array(where), _array(weights))
    return _reduce_lists(*_pro(*args, _array(sft_weight), _array(sft_logps)), reduce_fn)


@_kernel()
def _pro(policy_scores, rewards, where, weights, sft_weight, sft_logps):
    s, r, valid, w = _list_inputs(
        policy_scores, rewards, where, weights, names=("policy_scores", "rewards")
    )
    sft_lp = s if sft_logps is None else as_float(sft_logps, "sft_logps")
    sft_lp = sanitize(valid, jnp.broadcast_to(sft_lp, s.shape))
    pos = _positions(r, valid)
    n = jnp.sum(valid, axis=-1, keepdims=True)
    later = valid[..., None, :] & (pos[..., None, :] > pos[..., :, None])  # [..., k, i]
    gap = jnp.where(later, r[..., :, None] - r[..., None, :], 0.0)
    t_self = jnp.max(gap, axis=-1)
    eye = jnp.eye(s.shape[-1], dtype=bool)
    logits = jnp.where(eye, (s * t_self)[..., :, None], s[..., None, :] * gap)
    members = later | (eye & valid[..., :, None])
    lse, _ = _masked_logsumexp(logits, members)
    stage = valid & (pos < n - 1)
    rank_loss = jnp.sum(jnp.where(stage, w * (lse - s * t_self), 0.0), axis=-1)
    best = valid & (pos == 0)
    sft = -jnp.sum(jnp.where(best, w * sft_lp, 0.0), axis=-1)
    per_list = rank_loss + sft_weight * jnp.square(n[..., 0] - 1.0) * sft
    counted = n[..., 0] >= 2
    return jnp.where(counted, per_list, 0.0), counted
