"""Preference pairs from ranked lists, with fixed shapes for ``jit``, and curriculum order.

A list of ``K`` responses with labels (ratings, rewards) becomes index arrays ``chosen``,
``rejected`` and a validity mask ``where``, all ``[..., num_pairs]``. ``num_pairs``
depends only on ``K`` and the strategy, never on the data, so everything runs under
``jit`` and ``vmap``. Pairs of tied labels and pairs with a masked item are marked invalid
(``where = False``); their indices point at some item and must be masked downstream.
Pass ``where=pairs.where`` to the pairwise objective:

>>> import jax.numpy as jnp
>>> from jaxpref import losses
>>> labels = jnp.array([[3.0, 5.0, 2.0, 4.0]])
>>> pairs = list_pairs(labels, strategy="best_vs_rest")
>>> pairs.chosen.tolist(), pairs.rejected.tolist(), pairs.where.tolist()
([[1, 1, 1]], [[3, 0, 2]], [[True, True, True]])
>>> logps, ref = -jnp.ones((1, 4)), -jnp.ones((1, 4))
>>> loss = losses.dpo(*take_pairs(logps, pairs), *take_pairs(ref, pairs), where=pairs.where)
>>> round(float(loss), 4)
0.6931
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpref.losses._reduce import as_float, as_mask
from jaxpref.losses.listwise import _array, _kernel, _positions
from jaxpref.types import Array, ArrayLike, Mask

#: The pair-construction strategies of :func:`list_pairs`.
PAIR_STRATEGIES = ("all", "best_vs_rest", "adjacent")


class ListPairs(NamedTuple):
    """Index pairs into the list axis; all fields ``[..., num_pairs]``.

    Attributes:
      chosen: int32 index of the preferred (higher-label) item of each pair.
      rejected: int32 index of the other item.
      where: bool, True for real pairs (both items valid, labels strictly ordered).
    """

    chosen: Array
    rejected: Array
    where: Array


def num_pairs(list_size: int, strategy: str = "all") -> int:
    """The static number of pair slots :func:`list_pairs` returns for a list size.

    >>> num_pairs(4, "all"), num_pairs(4, "best_vs_rest"), num_pairs(4, "adjacent")
    (6, 3, 3)
    """
    if strategy not in PAIR_STRATEGIES:
        raise ValueError(f"strategy must be one of {PAIR_STRATEGIES}, got {strategy!r}")
    if strategy == "all":
        return list_size * (list_size - 1) // 2
    return max(list_size - 1, 0)


def list_pairs(labels: ArrayLike, *, strategy: str = "all", where: Mask = None) -> ListPairs:
    """Builds preference pairs from ranked lists.

    Strategies (``K`` = list size, ``n`` = number of valid items):

    * ``"all"``: every unordered pair ``i < j`` of the list, ``K (K - 1) / 2`` slots in
      index order; the higher-label item is ``chosen``.
    * ``"best_vs_rest"``: the best item against each other item in label order (second
      best first), ``K - 1`` slots; slots ``n - 1 ..`` are invalid. This is the Curry-DPO
      pair set (the top-rated response paired with each of the others).
    * ``"adjacent"``: consecutive items in label order, ``(1st, 2nd), (2nd, 3rd), ...``,
      ``K - 1`` slots.

    The label order is a stable sort: tied items keep their input order. A pair of tied
    items is invalid, so with ties ``"adjacent"`` skips the tied step, and
    ``"best_vs_rest"`` drops items tied with the best.

    Args:
      labels: ``[..., K]`` ratings or rewards (higher = better).
      strategy: one of :data:`PAIR_STRATEGIES`.
      where: ``[..., K]`` boolean mask of valid items.

    Returns:
      A :class:`ListPairs` of ``[..., num_pairs(K, strategy)]`` arrays.

    >>> import jax.numpy as jnp
    >>> p = list_pairs(jnp.array([1.0, 2.0, 2.0]), strategy="adjacent")
    >>> p.chosen.tolist(), p.rejected.tolist(), p.where.tolist()
    ([1, 2], [2, 0], [False, True])

    References:
      Pattnaik et al., Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked
      Preferences, 2024, arXiv:2403.07230.
    """
    num_pairs(1, strategy)  # validates the strategy
    if jnp.ndim(labels) < 1:
        raise ValueError(f"labels must have shape [..., list_size], got {jnp.shape(labels)}")
    return _list_pairs(_array(labels), _array(where), strategy=strategy)


@_kernel(static_argnames=("strategy",))
def _list_pairs(labels, where, *, strategy):
    y = jax.lax.stop_gradient(as_float(labels, "labels"))
    size = y.shape[-1]
    count = num_pairs(size, strategy)
    valid = as_mask(where, y.shape)
    valid = jnp.ones(y.shape, bool) if valid is None else valid
    y = jnp.where(valid, y, 0.0)
    if strategy == "all":
        first, second = (jnp.asarray(a, jnp.int32) for a in np.triu_indices(size, k=1))
        y1, y2 = y[..., first], y[..., second]
        chosen = jnp.where(y1 >= y2, first, second)
        rejected = jnp.where(y1 >= y2, second, first)
        ok = valid[..., first] & valid[..., second] & (y1 != y2)
        return ListPairs(chosen, rejected, ok)
    pos = _positions(y, valid)
    slots = jnp.arange(size, dtype=pos.dtype)
    # order[..., p] = index of the item at position p (for p < n).
    order = jnp.argmax(pos[..., None, :] == slots[:, None], axis=-1).astype(jnp.int32)
    n = jnp.sum(valid, axis=-1, keepdims=True)
    after = order[..., 1:]
    if strategy == "best_vs_rest":
        before = jnp.broadcast_to(order[..., :1], after.shape)
    else:
        before = order[..., :-1]
    exists = slots[1 : count + 1] < n
    better = jnp.take_along_axis(y, before, -1) > jnp.take_along_axis(y, after, -1)
    return ListPairs(before, after, exists & better)


def take_pairs(values: ArrayLike, pairs: ListPairs) -> tuple[Array, Array]:
    """Gathers per-item ``values`` ``[..., K]`` into ``(chosen, rejected)`` ``[..., P]``.

    Invalid pair slots gather arbitrary items: mask them with ``pairs.where``.
    """
    v = jnp.asarray(values)
    shape = jnp.broadcast_shapes(v.shape[:-1], pairs.chosen.shape[:-1])
    v = jnp.broadcast_to(v, (*shape, v.shape[-1]))
    chosen = jnp.broadcast_to(pairs.chosen, (*shape, pairs.chosen.shape[-1]))
    rejected = jnp.broadcast_to(pairs.rejected, (*shape, pairs.rejected.shape[-1]))
    return jnp.take_along_axis(v, chosen, -1), jnp.take_along_axis(v, rejected, -1)


def pair_gaps(labels: ArrayLike, pairs: ListPairs) -> Array:
    """Label gap ``labels[chosen] - labels[rejected]`` ``[..., P]`` (0 for invalid pairs)."""
    y = jax.lax.stop_gradient(as_float(labels, "labels"))
    good, bad = take_pairs(y, pairs)
    return jnp.where(pairs.where, good - bad, 0.0)


def curriculum_order(gaps: ArrayLike, *, where: Mask = None) -> Array:
    """Curry-DPO curriculum: pair indices ordered easy (large gap) to hard (small gap).

    Sorts the last axis by gap, largest first; equal gaps keep their order and invalid pairs
    go last. Returns int32 indices ``[..., P]`` into the pair axis.

    * Per prompt (the iterative Curry-DPO): ``order[..., t]`` is the pair of stage ``t``
      (``t = 0`` easiest). With ``"best_vs_rest"`` pairs of a 4-response list, the stages
      are (best, worst), (best, 3rd), (best, 2nd). In the paper the model trained in
      stage ``t`` becomes the reference of stage ``t + 1``. That belongs to the training
      loop, not here.
    * Over a dataset: pass the flattened gaps ``[N * P]`` to get one global easy-to-hard
      order.

    Args:
      gaps: ``[..., P]`` pair difficulty as a label gap (:func:`pair_gaps`).
      where: ``[..., P]`` valid pairs (``pairs.where``).

    Returns:
      ``[..., P]`` int32 indices, a permutation of the pair axis.

    >>> import jax.numpy as jnp
    >>> curriculum_order(jnp.array([1.0, 3.0, 2.0, 3.0]),
    ...                  where=jnp.array([True, True, True, False])).tolist()
    [1, 2, 0, 3]

    References:
      Pattnaik et al., Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked
      Preferences, 2024, arXiv:2403.07230 (pairs ordered by the rating difference, largest
      first; each iteration's model becomes the next reference) [secondary: abstract and
      review summaries; the method section was not retrieved].
    """
    return _curriculum_order(_array(gaps), _array(where))


@_kernel()
def _curriculum_order(gaps, where):
    g = jax.lax.stop_gradient(as_float(gaps, "gaps"))
    valid = as_mask(where, g.shape)
    valid = jnp.ones(g.shape, bool) if valid is None else valid
    index = jnp.broadcast_to(jnp.arange(g.shape[-1], dtype=jnp.int32), g.shape)
    keys = ((~valid).astype(jnp.int32), -jnp.where(valid, g, 0.0), index)
    return jax.lax.sort(keys, dimension=g.ndim - 1, num_keys=3)[-1]
