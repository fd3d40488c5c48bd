"""Log-probabilities of target tokens under a causal language model.

Three functions, from the most to the least memory:

* :func:`token_logps`: per-token log-probs ``[..., time]`` from logits ``[..., time, vocab]``.
* :func:`sequence_logps`: the (optionally masked, optionally length-averaged) sum over time.
* :func:`sequence_logps_from_hidden`: the same sum from final hidden states and the
  unembedding matrix, chunked over tokens so that the ``[..., time, vocab]`` logits are never
  held in memory, in the forward or the backward pass.

Targets are already shifted: ``targets[..., t]`` is the token that ``logits[..., t, :]``
predicts. For a causal LM run on ``tokens[..., :-1]``, the targets are ``tokens[..., 1:]``.

Everything is computed in float32 whatever the input dtype, and returns float32.
"""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxpref import _chunked_logps

__all__ = [
    "sequence_logps",
    "sequence_logps_from_hidden",
    "token_logps",
]


def _check_inputs(
    scores: jax.Array, targets: jax.Array, where: ArrayLike | None, name: str, last: str
) -> jax.Array | None:
    """Checks dtypes and shapes at the boundary; returns ``where`` as a bool array or None."""
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        raise TypeError(f"{name} must be a float array, got {scores.dtype}.")
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"targets must be an integer array, got {targets.dtype}.")
    if scores.ndim < 2 or scores.shape[:-1] != targets.shape:
        raise ValueError(
            f"{name} must be [..., time, {last}] and targets [..., time]; "
            f"got {name} {scores.shape} and targets {targets.shape}."
        )
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.shape != targets.shape:
        raise ValueError(
            f"where must have the shape of targets {targets.shape}, got {where.shape}."
        )
    return where.astype(bool)


def _reduce(token_lp: jax.Array, where: jax.Array | None, average: bool) -> jax.Array:
    """Sums (or averages) log-probs that are already zero at masked positions over time."""
    total = jnp.sum(token_lp, axis=-1)
    if not average:
        return total
    if where is None:
        count = jnp.asarray(token_lp.shape[-1], jnp.float32)
    else:
        count = jnp.sum(where, axis=-1, dtype=jnp.float32)
    return total / jnp.maximum(count, 1.0)


def token_logps(logits: ArrayLike, targets: ArrayLike) -> jax.Array:
    r"""Log-probability of each target token.

    .. math::

        \log p(y_t) = z_{t, y_t} - \log \sum_{v} \exp z_{t, v}

    computed as the picked logit minus the logsumexp (not ``log(softmax)``), in float32.
    ``targets[..., t]`` is the token that ``logits[..., t, :]`` predicts (already shifted).

    Args:
      logits: ``[..., time, vocab]`` float logits, any float dtype (bf16 is cast up first).
      targets: ``[..., time]`` int target ids in ``[0, vocab)``. A target outside that range
        gives NaN; to ignore padding such as ``-100``, use :func:`sequence_logps`'s ``where``.

    Returns:
      ``[..., time]`` float32 log-probs.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxpref.logprobs import token_logps
      >>> logits = jnp.zeros((1, 3, 4))  # uniform over 4 tokens: log(1/4) everywhere
      >>> print(token_logps(logits, jnp.array([[0, 1, 3]])).round(4))
      [[-1.3863 -1.3863 -1.3863]]
    """
    logits, targets = jnp.asarray(logits), jnp.asarray(targets)
    _check_inputs(logits, targets, None, "logits", "vocab")
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1, mode="clip")[..., 0]
    valid = (targets >= 0) & (targets < logits.shape[-1])
    return jnp.where(valid, picked - lse, jnp.nan)


def sequence_logps(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    where: ArrayLike | None = None,
    average: bool = False,
) -> jax.Array:
    r"""Sum (or mean) of target log-probs over the unmasked positions of each sequence.

    .. math::

        \mathrm{LP} = \sum_t m_t \log p(y_t), \qquad
        \mathrm{AP} = \frac{\sum_t m_t \log p(y_t)}{\max(1, \sum_t m_t)}

    with :math:`\log p(y_t)` from :func:`token_logps` and mask :math:`m_t` (``where``).
    Masked positions contribute exactly zero, to values and to gradients, even when their
    logits are ``-inf`` or their targets are out of range (``-100`` label padding): their
    logits and targets are replaced with zeros *before* the log-softmax (the double-where
    trick). A fully masked row gives 0, with zero gradients.

    Args:
      logits: ``[..., time, vocab]`` float logits, any float dtype (computed in float32).
      targets: ``[..., time]`` int ids; ``targets[..., t]`` is predicted by
        ``logits[..., t, :]``.
      where: optional ``[..., time]`` bool mask, True on the tokens to score (for example
        completion tokens). None scores every position.
      average: if True return the mean over unmasked tokens (divided by ``max(1, count)``)
        instead of the sum.

    Returns:
      ``[...]`` float32 sequence log-probs (leading axes preserved, e.g. ``[batch]``).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxpref.logprobs import sequence_logps
      >>> logits = jnp.zeros((2, 3, 4))  # log(1/4) = -1.3863 per token
      >>> targets = jnp.array([[0, 1, -100], [2, -100, -100]])
      >>> where = targets != -100
      >>> print(sequence_logps(logits, targets, where=where).round(4))
      [-2.7726 -1.3863]
      >>> print(sequence_logps(logits, targets, where=where, average=True).round(4))
      [-1.3863 -1.3863]
    """
    logits, targets = jnp.asarray(logits), jnp.asarray(targets)
    where = _check_inputs(logits, targets, where, "logits", "vocab")
    logits = logits.astype(jnp.float32)
    if where is not None:
        logits = jnp.where(where[..., None], logits, 0.0)
        targets = jnp.where(where, targets, 0)
    token_lp = token_logps(logits, targets)
    if where is not None:
        token_lp = jnp.where(where, token_lp, 0.0)
    return _reduce(token_lp, where, average)


def sequence_logps_from_hidden(
    hidden: ArrayLike,
    unembedding: ArrayLike,
    targets: ArrayLike,
    *,
    where: ArrayLike | None = None,
    average: bool = False,
    chunk_size: int | None = None,
) -> jax.Array:
    r""":func:`sequence_logps` of ``hidden @ unembedding``, without materialising the logits.

    Equal to ``sequence_logps(hidden @ unembedding, targets, where=where, average=average)``
    (up to float32 summation order), but the tokens (all leading axes flattened) are processed
    ``chunk_size`` at a time under a :func:`jax.custom_vjp`: the forward keeps only one chunk
    of logits ``[chunk_size, vocab]`` and the per-token logsumexp; the backward recomputes
    each chunk's logits and forms

    .. math::

        \delta_i = g_i\,(\operatorname{onehot}(y_i) - \operatorname{softmax}(h_i W)), \qquad
        \partial h_i = \delta_i W^\top, \qquad \partial W = \textstyle\sum_i h_i^\top \delta_i,

    accumulating :math:`\partial W` in float32. Peak extra memory is a few chunk-sized
    buffers plus the float32 ``[d_model, vocab]`` gradient accumulator, instead of several
    ``[..., time, vocab]`` arrays. With ``where``, the tokens are taken scored-first (a stable
    sort of the mask; the hidden states are gathered chunk by chunk, never copied whole) and
    a chunk with no scored token skips the projection in both passes, so prompt and padding
    tokens cost (almost) nothing. Masking and averaging are applied outside the custom VJP
    in plain JAX, and masked tokens' targets are replaced with 0 first; inside the custom VJP
    a token with zero cotangent has its hidden state and logit gradient zeroed chunk by
    chunk. So masked tokens contribute exactly zero, with no NaN, to values and gradients,
    even when their targets are ``-100`` or their hidden states are not finite.

    Under :func:`jax.vmap` each chunk's logits gain the mapped axis, so the chunk buffers
    grow by the mapped size; prefer passing extra leading axes directly. For data-parallel
    sharding, call it inside :func:`jax.shard_map` over the batch axes: each device chunks its
    own tokens and the unembedding gradient is all-reduced once. (Outside ``shard_map``, a
    token axis sharded by GSPMD is gathered onto every device, and an explicitly sharded one
    is rejected by the chunk loop.)

    Args:
      hidden: ``[..., time, d_model]`` final hidden states, any float dtype (float32 math).
      unembedding: ``[d_model, vocab]`` output projection (the transposed embedding when
        tied), any float dtype.
      targets: ``[..., time]`` int ids; ``targets[..., t]`` is predicted by
        ``hidden[..., t, :] @ unembedding``.
      where: optional ``[..., time]`` bool mask, True on the tokens to score.
      average: if True return the mean over unmasked tokens instead of the sum.
      chunk_size: tokens per chunk, a Python int. None picks the size automatically so that
        one chunk of logits holds about ``2**24`` float32 elements (64 MiB): at most
        ``max(1, 2**24 // vocab)`` tokens, in equal chunks rounded to a multiple of 8 where
        possible. The token count is padded up to a multiple of ``chunk_size`` with masked
        tokens.

    Returns:
      ``[...]`` float32 sequence log-probs (leading axes preserved); gradients come back in
      the dtypes of ``hidden`` and ``unembedding``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxpref.logprobs import sequence_logps, sequence_logps_from_hidden
      >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
      >>> hidden = jax.random.normal(k1, (2, 5, 8))
      >>> unembedding = jax.random.normal(k2, (8, 11))
      >>> targets = jax.random.randint(k3, (2, 5), 0, 11)
      >>> chunked = sequence_logps_from_hidden(hidden, unembedding, targets, chunk_size=3)
      >>> naive = sequence_logps(hidden @ unembedding, targets)
      >>> print(chunked.shape, bool(jnp.allclose(chunked, naive, rtol=1e-5)))
      (2,) True
    """
    hidden, unembedding = jnp.asarray(hidden), jnp.asarray(unembedding)
    targets = jnp.asarray(targets)
    where = _check_inputs(hidden, targets, where, "hidden", "d_model")
    if not jnp.issubdtype(unembedding.dtype, jnp.floating):
        raise TypeError(f"unembedding must be a float array, got {unembedding.dtype}.")
    d_model = hidden.shape[-1]
    if unembedding.ndim != 2 or unembedding.shape[0] != d_model:
        raise ValueError(
            f"unembedding must be [d_model={d_model}, vocab], got {unembedding.shape}."
        )
    n_tokens = math.prod(targets.shape)
    if chunk_size is None:
        chunk_size = _chunked_logps.auto_chunk_size(n_tokens, unembedding.shape[1])
    elif isinstance(chunk_size, bool | float) or not hasattr(chunk_size, "__index__"):
        raise ValueError(f"chunk_size must be a positive Python int or None, got {chunk_size!r}.")
    elif (chunk_size := operator.index(chunk_size)) < 1:
        raise ValueError(f"chunk_size must be a positive Python int or None, got {chunk_size!r}.")

    flat_hidden = hidden.reshape(n_tokens, d_model)
    flat_targets = targets.reshape(n_tokens).astype(jnp.int32)
    rows = None  # tokens in their own order, hidden states split into chunks as they are
    if where is None:
        mask = jnp.ones((n_tokens,), bool)
    else:
        mask = where.reshape(n_tokens)
        flat_targets = jnp.where(mask, flat_targets, 0)
        if n_tokens > chunk_size:
            # Scored tokens first (a stable sort keeps their order), so that prompt and
            # padding tokens fill whole chunks, which skip the vocabulary projection. Only
            # index vectors are reordered; the hidden states are gathered chunk by chunk.
            rows = jnp.argsort(~mask, stable=True).astype(jnp.int32)
            flat_targets, mask = flat_targets[rows], mask[rows]
    pad = -n_tokens % chunk_size
    if pad:  # masked padding tokens (pointing at row 0 when the rows are gathered)
        flat_targets = jnp.pad(flat_targets, (0, pad))
        mask = jnp.pad(mask, (0, pad))
        if rows is None:
            flat_hidden = jnp.pad(flat_hidden, ((0, pad), (0, 0)))
        else:
            rows = jnp.pad(rows, (0, pad))

    token_lp = _chunked_logps.chunked_token_logps(
        flat_hidden, unembedding, flat_targets, mask, rows, chunk_size
    )
    token_lp = jnp.where(mask, token_lp, 0.0)[:n_tokens]
    if rows is not None:  # back to the caller's order
        token_lp = jnp.zeros_like(token_lp).at[rows[:n_tokens]].set(token_lp, unique_indices=True)
    return _reduce(token_lp.reshape(targets.shape), where, average)
