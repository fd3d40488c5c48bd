r"""Private core of :func:`jaxpref.logprobs.sequence_logps_from_hidden`.

Per-token log-probs from final hidden states and the unembedding matrix, computed chunk by
chunk of tokens under a :func:`jax.custom_vjp` so that the ``[n_tokens, vocab]`` logits never
exist in full, neither in the forward nor in the backward pass.

For token :math:`i` with hidden state :math:`h_i`, logits :math:`z_i = h_i W` and target
:math:`y_i`:

.. math::

    \ell_i = z_{i, y_i} - \operatorname{logsumexp}_v z_{i, v}, \qquad
    \partial \ell_i / \partial z_i = \operatorname{onehot}(y_i) - \operatorname{softmax}(z_i).

With upstream cotangent :math:`g_i` and
:math:`\delta_i = g_i (\operatorname{onehot}(y_i) - \operatorname{softmax}(z_i))`, the
gradients are :math:`\partial h_i = \delta_i W^\top` and
:math:`\partial W = \sum_i h_i^\top \delta_i`. The forward keeps only the per-token
logsumexp (``O(n_tokens)``) as a residual; the backward recomputes each chunk's logits.

Masking and averaging are not done here: the caller applies them in plain JAX around
:func:`chunked_token_logps`, so that the cotangent ``g`` already carries them. A token whose
cotangent is exactly zero (masked or padding) contributes exactly zero to both gradients,
even if its hidden state is not finite.

Work is skipped, not only zeroed: a chunk whose tokens are all unscored (the ``mask``
argument in the forward, an all-zero cotangent in the backward) skips its vocabulary
projection under :func:`jax.lax.cond`. The caller orders the tokens scored-first (see
:func:`jaxpref.logprobs.sequence_logps_from_hidden`), so that prompt and padding tokens fill
whole chunks and cost nothing. (Under :func:`jax.vmap` a ``cond`` becomes a select and both
branches run: correct, just without the saving.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["LOGITS_BUDGET", "auto_chunk_size", "chunked_token_logps"]

# Float32 elements in one chunk of logits when ``chunk_size`` is chosen automatically
# (2**24 elements = 64 MiB): large enough that each chunk is a big, efficient matmul, small
# enough that a few chunk-sized buffers are negligible next to model activations.
LOGITS_BUDGET = 2**24

_ALIGN = 8  # round automatic chunk sizes to a multiple of this many tokens when possible


def auto_chunk_size(n_tokens: int, vocab: int) -> int:
    """Chooses a chunk size so that one chunk of logits holds about ``LOGITS_BUDGET`` floats.

    The budget allows ``max(1, LOGITS_BUDGET // vocab)`` tokens per chunk. If all tokens fit,
    there is one chunk. Otherwise the fewest chunks that respect the budget are used, sized
    equally and rounded up to a multiple of 8 when that still fits the budget, so padding is
    under 8 tokens per chunk.

    Args:
      n_tokens: number of tokens (all leading axes flattened), at least 0.
      vocab: vocabulary size, at least 1.

    Returns:
      A chunk size in ``[1, max(1, n_tokens)]``.
    """
    budget = max(1, LOGITS_BUDGET // vocab)
    if n_tokens <= budget:
        return max(1, n_tokens)
    num_chunks = -(-n_tokens // budget)
    chunk = -(-n_tokens // num_chunks)
    aligned = -(-chunk // _ALIGN) * _ALIGN
    return aligned if aligned <= budget else chunk


def _chunk_logits(hidden: jax.Array, unembedding: jax.Array) -> jax.Array:
    """``[chunk, d_model] @ [d_model, vocab]`` with float32 accumulation and result."""
    return jnp.matmul(hidden, unembedding, preferred_element_type=jnp.float32)


def _varying_axes(x: jax.Array) -> frozenset[str]:
    """Manual mesh axes that ``x`` varies over inside :func:`jax.shard_map` (else empty)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def _split(x: jax.Array, chunk_size: int) -> jax.Array:
    """``[n, ...] -> [n // chunk_size, chunk_size, ...]`` (free reshape)."""
    return x.reshape(x.shape[0] // chunk_size, chunk_size, *x.shape[1:])


def _chunk_source(hidden: jax.Array, rows: jax.Array | None, chunk_size: int):
    """Per-chunk scan inputs for the hidden states, and how a chunk's ``[c, d]`` is made.

    Without ``rows`` the hidden states are split (a free reshape); with ``rows`` each chunk
    gathers its rows, so no reordered copy of ``hidden`` is ever made.
    """
    if rows is None:
        return _split(hidden, chunk_size), lambda h: h
    return _split(rows, chunk_size), lambda r: jnp.take(hidden, r, axis=0)


def _forward(
    hidden: jax.Array,
    unembedding: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    rows: jax.Array | None,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Returns log-probs ``[m]`` and logsumexp ``[m]``, one chunk of tokens at a time.

    A chunk with no scored token (``mask`` all False) is not projected (nor gathered): its
    log-probs and logsumexp are 0.
    """
    vocab = unembedding.shape[1]
    source, chunk_hidden = _chunk_source(hidden, rows, chunk_size)

    def project(x, t):
        logits = _chunk_logits(chunk_hidden(x), unembedding)
        lse = jax.nn.logsumexp(logits, axis=-1)
        picked = jnp.take_along_axis(logits, t[:, None], axis=-1, mode="clip")[:, 0]
        valid = (t >= 0) & (t < vocab)
        return jnp.where(valid, picked - lse, jnp.nan), lse

    def skip(x, t):
        zeros = jax.lax.full_like(hidden, 0, jnp.float32, shape=t.shape)
        return zeros, zeros

    def body(carry, xs):
        x, t, m = xs
        if single:  # nothing to skip; a cond would only cost XLA a buffer
            return carry, project(x, t)
        return carry, jax.lax.cond(jnp.any(m), project, skip, x, t)

    single = targets.shape[0] == chunk_size
    xs = (source, _split(targets, chunk_size), _split(mask, chunk_size))
    _, (logps, lse) = jax.lax.scan(body, None, xs)
    return logps.reshape(-1), lse.reshape(-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def chunked_token_logps(
    hidden: jax.Array,
    unembedding: jax.Array,
    targets: jax.Array,
    mask: jax.Array,
    rows: jax.Array | None,
    chunk_size: int,
) -> jax.Array:
    """Per-token target log-probs from hidden states, chunked over tokens.

    Token ``i`` of the result is row ``rows[i]`` of ``hidden`` (row ``i`` when ``rows`` is
    None) with target ``targets[i]``. With ``rows`` the caller orders the tokens freely, e.g.
    scored tokens first so that unscored ones fill whole chunks, which are skipped; the rows
    are gathered one chunk at a time (no reordered copy of ``hidden`` is made).

    Args:
      hidden: ``[n_rows, d_model]`` final hidden states, any float dtype.
      unembedding: ``[d_model, vocab]`` output projection, any float dtype.
      targets: ``[m]`` int target ids in ``[0, vocab)``; others give NaN.
      mask: ``[m]`` bool, True on the tokens the caller will use. Unused tokens get
        unspecified values (0 where their whole chunk is unused), and the caller must give
        them a zero cotangent.
      rows: ``[m]`` int row indices into ``hidden`` (repeats allowed, e.g. for padding), or
        None: ``hidden`` has exactly the ``m`` rows, in order.
      chunk_size: Python int that divides ``m`` (the caller pads).

    Returns:
      ``[m]`` float32 log-probs.
    """
    return _forward(hidden, unembedding, targets, mask, rows, chunk_size)[0]


def _fwd(hidden, unembedding, targets, mask, rows, chunk_size):
    logps, lse = _forward(hidden, unembedding, targets, mask, rows, chunk_size)
    return logps, (hidden, unembedding, targets, rows, lse)


def _bwd(chunk_size, residuals, g):
    hidden, unembedding, targets, rows, lse = residuals
    d_model, vocab = unembedding.shape
    block = min(vocab, max(1, LOGITS_BUDGET // d_model))  # columns per d_unembedding update
    source, chunk_hidden = _chunk_source(hidden, rows, chunk_size)

    def chunk_grads(d_unembedding, h, t, lse_c, g_c):
        """This chunk's ``d_hidden [c, d]`` and ``d_unembedding`` updated with its share."""
        probs = jnp.exp(_chunk_logits(h, unembedding) - lse_c[:, None])
        dlogits = g_c[:, None] * (jax.nn.one_hot(t, vocab, dtype=jnp.float32) - probs)
        # Guard: a token with zero cotangent (masked, or padding) contributes exactly zero,
        # even if its hidden state or softmax is not finite. Done per chunk, so the caller
        # needn't make a sanitised [n_tokens, d_model] copy of the hidden states.
        inert = g_c[:, None] == 0
        dlogits = jnp.where(inert, 0.0, dlogits)
        h = jnp.where(inert, jnp.zeros((), h.dtype), h)
        d_h = jnp.matmul(dlogits, unembedding.T, preferred_element_type=jnp.float32)

        # d_unembedding += h.T @ dlogits, one block of vocab columns at a time (updated in
        # place), where one [d_model, vocab] product would be a temporary as large as the
        # accumulator. A loop, not unrolled: XLA gives unrolled products separate buffers.
        def add_block(start, acc, width):
            update = jax.lax.dynamic_slice_in_dim(acc, start, width, axis=1) + jnp.matmul(
                h.T,
                jax.lax.dynamic_slice_in_dim(dlogits, start, width, axis=1),
                preferred_element_type=jnp.float32,
            )
            return jax.lax.dynamic_update_slice_in_dim(acc, update, start, axis=1)

        num_full = vocab // block
        d_unembedding = jax.lax.fori_loop(
            0, num_full, lambda j, acc: add_block(j * block, acc, block), d_unembedding
        )
        if vocab % block:
            d_unembedding = add_block(num_full * block, d_unembedding, vocab % block)
        return d_unembedding, d_h.astype(hidden.dtype)

    single = targets.shape[0] == chunk_size  # nothing to skip; a cond would cost a buffer

    def when_active(g_c, compute, skip, *operands):
        if single:
            return compute(*operands)
        return jax.lax.cond(jnp.any(g_c != 0), compute, skip, *operands)

    xs = (source, *(_split(x, chunk_size) for x in (targets, lse, g.astype(jnp.float32))))
    # full_like, not zeros: inside shard_map the accumulators must vary like the hidden states.
    d_unembedding = jax.lax.full_like(hidden, 0, jnp.float32, shape=(d_model, vocab))
    if rows is None:  # chunk i's d_hidden is rows [i*c, (i+1)*c): stacked scan outputs

        def body(acc, xs):
            x, t, lse_c, g_c = xs
            return when_active(
                g_c,
                lambda: chunk_grads(acc, x, t, lse_c, g_c),
                lambda: (acc, jnp.zeros_like(x)),
            )

        d_unembedding, d_hidden = jax.lax.scan(body, d_unembedding, xs)
        d_hidden = d_hidden.reshape(hidden.shape)
    else:  # scatter-add into the gathered rows; repeated (padding) rows add exact zeros

        def body(carry, xs):
            r, t, lse_c, g_c = xs

            def update(acc, d_hidden):
                acc, d_h = chunk_grads(acc, chunk_hidden(r), t, lse_c, g_c)
                return acc, d_hidden.at[r].add(d_h, mode="drop")

            return when_active(g_c, update, lambda *c: c, *carry), None

        (d_unembedding, d_hidden), _ = jax.lax.scan(
            body, (d_unembedding, jnp.zeros_like(hidden)), xs
        )
    # Inside shard_map, a W replicated across axes that the tokens vary over gets the sum of
    # the per-device partial gradients (what the implicit broadcast of W transposes to):
    # one all-reduce, after all chunks.
    summed_axes = _varying_axes(d_unembedding) - _varying_axes(unembedding)
    if summed_axes:
        d_unembedding = jax.lax.psum(d_unembedding, tuple(sorted(summed_axes)))
    return d_hidden, d_unembedding.astype(unembedding.dtype), None, None, None


chunked_token_logps.defvjp(_fwd, _bwd)
