"""Pair construction from ranked lists (fixed shapes under jit) and the Curry-DPO order."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpref.losses.pairs import (
    PAIR_STRATEGIES,
    curriculum_order,
    list_pairs,
    num_pairs,
    pair_gaps,
    take_pairs,
)
from jaxpref.losses.pairwise import dpo

RNG = np.random.default_rng(3)


def np_pairs(y, mask, strategy):
    """The set of (chosen, rejected) pairs a list should give (independent re-derivation)."""
    idx = np.flatnonzero(mask)
    order = idx[np.argsort(-y[idx], kind="stable")]
    if strategy == "all":
        cand = [(i, j) if y[i] >= y[j] else (j, i) for i, j in itertools.combinations(idx, 2)]
    elif strategy == "best_vs_rest":
        cand = [(order[0], j) for j in order[1:]]
    else:
        cand = list(itertools.pairwise(order))
    return [(int(i), int(j)) for i, j in cand if y[i] > y[j]]


def valid_pairs(p, row):
    c, r, w = (np.asarray(a)[row] for a in p)
    return [(int(i), int(j)) for i, j, ok in zip(c, r, w, strict=True) if ok]


@pytest.mark.parametrize("strategy", PAIR_STRATEGIES)
def test_list_pairs_match_numpy(strategy):
    y = RNG.integers(0, 4, size=(12, 5)).astype(np.float32)  # graded: ties occur
    mask = RNG.random((12, 5)) < 0.8
    mask[0], mask[1] = True, False
    p = list_pairs(y, strategy=strategy, where=mask)
    assert p.chosen.shape == p.rejected.shape == p.where.shape == (12, num_pairs(5, strategy))
    assert p.chosen.dtype == jnp.int32
    for row in range(12):
        got = valid_pairs(p, row)
        expected = np_pairs(y[row], mask[row], strategy)
        if strategy == "all":
            assert sorted(got) == sorted(expected)
        else:
            assert got == expected  # in label order
        for i, j in got:
            assert y[row, i] > y[row, j] and mask[row, i] and mask[row, j]


def test_ties_form_no_pair():
    y = jnp.array([2.0, 2.0, 1.0, 1.0])
    for strategy in PAIR_STRATEGIES:
        p = list_pairs(y, strategy=strategy)
        c, r, w = (np.asarray(a) for a in p)
        assert not np.any(w & (np.asarray(y)[c] == np.asarray(y)[r]))
    assert list_pairs(jnp.ones(4)).where.sum() == 0


def test_pairs_under_jit_have_fixed_shapes_and_trace_once():
    traces = []

    @jax.jit
    def build(y, mask):
        traces.append(None)
        return list_pairs(y, strategy="adjacent", where=mask)

    shapes = set()
    for seed in range(3):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 3, size=(4, 6)).astype(np.float32)
        p = build(y, rng.random((4, 6)) < rng.random())
        shapes.add(tuple(a.shape for a in p))
    assert len(traces) == 1 and shapes == {((4, 5), (4, 5), (4, 5))}
    vmapped = jax.vmap(lambda y: list_pairs(y, strategy="all"))(jnp.arange(12.0).reshape(3, 4))
    assert vmapped.chosen.shape == (3, 6)


def test_take_pairs_feeds_dpo():
    y = RNG.normal(size=(3, 4)).astype(np.float32)
    lp, ref = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    p = list_pairs(y, strategy="best_vs_rest")
    got = dpo(*take_pairs(lp, p), *take_pairs(ref, p), beta=0.5, where=p.where, reduce_fn=None)
    for row in range(3):
        for slot, (i, j) in enumerate(valid_pairs(p, row)):
            h = (lp[row, i] - ref[row, i]) - (lp[row, j] - ref[row, j])
            np.testing.assert_allclose(got[row, slot], np.logaddexp(0, -0.5 * h), rtol=1e-5)
    chosen_y, rejected_y = take_pairs(y, p)
    np.testing.assert_allclose(pair_gaps(y, p), np.where(p.where, chosen_y - rejected_y, 0.0))


def test_curry_dpo_stages_go_from_easy_to_hard():
    # The paper's Figure 1 example: four responses rated 5, 3, 4, 2 (R1 > R3 > R2 > R4).
    ratings = jnp.array([5.0, 3.0, 4.0, 2.0])
    p = list_pairs(ratings, strategy="best_vs_rest")
    gaps = pair_gaps(ratings, p)
    order = curriculum_order(gaps, where=p.where)
    stages = [(int(p.chosen[k]), int(p.rejected[k])) for k in np.asarray(order)]
    assert stages == [(0, 3), (0, 1), (0, 2)]  # gaps 3, 2, 1: easy (large gap) first
    np.testing.assert_array_equal(np.asarray(gaps)[np.asarray(order)], [3.0, 2.0, 1.0])


def test_curriculum_order_matches_numpy_over_a_dataset():
    gaps = RNG.integers(0, 4, size=(40,)).astype(np.float32)
    valid = RNG.random(40) < 0.8
    got = np.asarray(jax.jit(lambda g, v: curriculum_order(g, where=v))(gaps, valid))
    expected = np.lexsort((np.arange(40), -np.where(valid, gaps, 0), ~valid))
    np.testing.assert_array_equal(got, expected)
    batched = curriculum_order(gaps.reshape(4, 10), where=valid.reshape(4, 10))
    for row in range(4):
        v, g = valid.reshape(4, 10)[row], gaps.reshape(4, 10)[row]
        np.testing.assert_array_equal(
            batched[row], np.lexsort((np.arange(10), -np.where(v, g, 0), ~v))
        )


def test_bad_strategy():
    with pytest.raises(ValueError, match="strategy"):
        list_pairs(jnp.ones(3), strategy="outside_in")
