"""General preference model (GPM): a skew-symmetric preference score and its loss.

Each response is embedded as ``v ∈ R^{2k}`` and two responses are compared through the
block-diagonal skew-symmetric operator

.. math:: R^{\\succ} = \\mathrm{blockdiag}\\Big(
          \\lambda_1 \\begin{bmatrix}0 & -1\\\\ 1 & 0\\end{bmatrix}, \\dots,
          \\lambda_k \\begin{bmatrix}0 & -1\\\\ 1 & 0\\end{bmatrix}\\Big),
          \\qquad s(a \\succ b) = a^\\top (R^{\\succ})^\\top b,

so that ``s(a ≻ b) = -s(b ≻ a)`` and ``s(a ≻ a) = 0``. Unlike a scalar (Bradley-Terry)
reward, such a score can represent intransitive (cyclic) preferences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxpref.losses._reduce import as_float, as_mask, reduce_losses, sanitize
from jaxpref.types import Array, ArrayLike, Mask

ReduceArg = Callable[..., Any] | None


def _split_blocks(embedding: Array, name: str) -> tuple[Array, Array]:
    """Returns the even (``v[2l]``) and odd (``v[2l+1]``) coordinates, ``[..., k]`` each."""
    dim = embedding.shape[-1] if embedding.ndim else 0
    if dim == 0 or dim % 2:
        raise ValueError(
            f"{name} must have an even, non-zero last axis [..., 2k], got shape {embedding.shape}"
        )
    return embedding[..., 0::2], embedding[..., 1::2]


def _l2_normalize(embedding: Array, eps: float = 1e-12) -> Array:
    """``v / max(||v||, eps)`` (as ``torch.nn.functional.normalize``), finite gradient at 0."""
    sq = jnp.sum(jnp.square(embedding), axis=-1, keepdims=True)
    return embedding * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def general_preference_score(
    embedding_a: ArrayLike,
    embedding_b: ArrayLike,
    *,
    prompt_weights: ArrayLike | None = None,
) -> Array:
    """The GPM preference score ``s(a ≻ b)``: exactly skew-symmetric in its two arguments.

    .. math::
        s(a \\succ b) = \\sum_{l=1}^{k} \\lambda_l\\,
            \\big(a_{2l-1}\\,b_{2l} - a_{2l}\\,b_{2l-1}\\big)

    (1-based coordinates; Zhang et al., the preference score with the skew-symmetric
    block operator ``R^≻``). The sign convention is the released code's: a 2-D embedding gives
    ``s = a[0]·b[1] - a[1]·b[0]`` (``GeneralPreferenceLoss``), and the high-dimensional one
    ``a @ R.T @ b`` with ``R[2l, 2l+1] = -1``, ``R[2l+1, 2l] = 1``
    (``create_skew_symmetric_block_matrix``), which is the formula above.

    Skew-symmetry holds bit for bit, not only up to rounding: both bilinear halves
    ``Σ λ a_{2l-1} b_{2l}`` and ``Σ λ a_{2l} b_{2l-1}`` are computed by the same expression
    (swapping the arguments swaps them), and an optimisation barrier keeps the compiler from
    fusing the final subtraction into a fused multiply-add, so ``s(a, b) == -s(b, a)`` and
    ``s(a, a) == 0`` exactly, also under ``jit``. (Without the barrier XLA's CPU backend
    already contracts ``a0*b1 - a1*b0`` under ``jit`` and breaks exact antisymmetry; tested on
    CPU, not on accelerators.)

    Args:
      embedding_a: ``[..., 2k]`` embeddings of the first responses.
      embedding_b: ``[..., 2k]`` embeddings of the second responses (broadcast with
        ``embedding_a``; e.g. ``emb[..., :, None, :]`` against ``emb[..., None, :, :]`` gives
        the ``[..., K, K]`` score table of K responses).
      prompt_weights: ``[..., k]`` non-negative block weights ``λ_l(x)`` (the prompt-dependent
        operator), or None for ``λ_l = 1``. The released code uses
        ``k · softmax(prompt_head(h_x) / sqrt(d))``, so uniform weights equal ``1``; pass
        weights on that scale to match it. Weights are used as given (differentiable).

    Returns:
      ``[...]`` scores (float32, or float64 for float64 inputs).

    >>> import jax.numpy as jnp
    >>> a, b = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    >>> float(general_preference_score(a, b)), float(general_preference_score(b, a))
    (1.0, -1.0)

    References:
      Zhang et al., Beyond Bradley-Terry Models: A General Preference Model for Language Model
      Alignment, 2024, arXiv:2410.02197 (code: general-preference/general-preference-model,
      ``general_preference/models/loss.py``, ``rw_model_general_preference.py``).
    """
    a = as_float(embedding_a, "embedding_a")
    b = as_float(embedding_b, "embedding_b")
    a_even, a_odd = _split_blocks(a, "embedding_a")
    b_even, b_odd = _split_blocks(b, "embedding_b")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"embedding_a and embedding_b must have the same last axis, got {a.shape[-1]} and "
            f"{b.shape[-1]}"
        )
    if prompt_weights is None:
        lam = jnp.ones((), a.dtype)
    else:
        lam = as_float(prompt_weights, "prompt_weights")
        if lam.ndim == 0 or lam.shape[-1] not in (1, a_even.shape[-1]):
            raise ValueError(
                f"prompt_weights must have shape [..., k] with k = {a_even.shape[-1]}, got "
                f"{lam.shape}"
            )

    def half(x_even: Array, y_odd: Array) -> Array:
        # One expression for both halves; the elementwise product commutes exactly.
        return jnp.sum(lam * (x_even * y_odd), axis=-1)

    forward, backward = jax.lax.optimization_barrier((half(a_even, b_odd), half(b_even, a_odd)))
    return forward - backward


def gpm(
    chosen_embedding: ArrayLike,
    rejected_embedding: ArrayLike,
    *,
    prompt_weights: ArrayLike | None = None,
    temperature: ArrayLike = 1.0,
    margin: ArrayLike = 0.0,
    normalize: bool = False,
    where: Mask = None,
    reduce_fn: ReduceArg = jnp.mean,
) -> Array:
    """The general preference model loss: logistic loss on the skew-symmetric GPM score.

    .. math::
        L = -\\log\\sigma\\Big(\\frac{s(y_w \\succ y_l \\mid x) - m}{\\tau}\\Big),
        \\qquad P(y_w \\succ y_l \\mid x) = \\sigma\\big(s(y_w \\succ y_l \\mid x)/\\tau\\big)

    with ``s`` from :func:`general_preference_score` (Zhang et al., the GPM training
    objective; the released ``GeneralPreferenceLoss`` / ``HighDimGeneralPreferenceMoELoss``
    compute ``-logsigmoid((s - margin) / tau)``). With ``k = 1`` and unit weights this can fit
    a cyclic preference ``A ≻ B ≻ C ≻ A`` exactly, which no scalar reward can.

    ``normalize=True`` L2-normalises each embedding (over its ``2k`` coordinates) before
    scoring, as the paper describes; the released code has that normalisation commented out,
    so the default (False) matches the code. A zero embedding stays finite (``eps = 1e-12``).

    Args:
      chosen_embedding: ``[..., 2k]`` embeddings of the preferred responses.
      rejected_embedding: ``[..., 2k]`` embeddings of the other responses.
      prompt_weights: ``[..., k]`` block weights ``λ(x)`` or None (see
        :func:`general_preference_score`).
      temperature: ``τ > 0``, scalar or ``[...]``.
      margin: scalar or ``[...]`` margin ``m`` (a constant, stop-gradient).
      normalize: L2-normalise the embeddings first.
      where: ``[...]`` boolean pair mask.
      reduce_fn: ``jnp.mean`` by default; ``None`` gives per-pair losses.

    Returns:
      The reduced loss, or ``[...]`` per-pair losses.

    >>> import jax.numpy as jnp
    >>> v = jnp.array([[1.0, 0.0]])
    >>> round(float(gpm(v, v)), 4)  # s(a, a) = 0: log 2
    0.6931

    References:
      Zhang et al., Beyond Bradley-Terry Models: A General Preference Model for Language Model
      Alignment, 2024, arXiv:2410.02197.
    """
    a = as_float(chosen_embedding, "chosen_embedding")
    b = as_float(rejected_embedding, "rejected_embedding")
    _split_blocks(a, "chosen_embedding")
    _split_blocks(b, "rejected_embedding")
    tau = as_float(temperature, "temperature")
    m = jax.lax.stop_gradient(as_float(margin, "margin"))
    lam = None if prompt_weights is None else as_float(prompt_weights, "prompt_weights")
    lam_batch = () if lam is None or lam.ndim == 0 else lam.shape[:-1]
    shape = jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1], lam_batch, tau.shape, m.shape)
    mask = as_mask(where, shape)
    a = sanitize(mask, jnp.broadcast_to(a, (*shape, a.shape[-1])))
    b = sanitize(mask, jnp.broadcast_to(b, (*shape, b.shape[-1])))
    tau = sanitize(mask, jnp.broadcast_to(tau, shape), fill=1.0)
    m = sanitize(mask, jnp.broadcast_to(m, shape))
    if lam_batch:
        lam = sanitize(mask, jnp.broadcast_to(lam, (*shape, lam.shape[-1])))
    if normalize:
        a, b = _l2_normalize(a), _l2_normalize(b)
    s = general_preference_score(a, b, prompt_weights=lam)
    return reduce_losses(jax.nn.softplus(-(s - m) / tau), where=mask, reduce_fn=reduce_fn)
