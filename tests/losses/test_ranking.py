"""LiPO-λ and RankList vs independent NumPy re-derivations and rax, plus properties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax

from jaxpref import testing
from jaxpref.losses.ranking import lambda_weights, lipo_lambda, ranklist
from tests.losses.cases import normal

RNG = np.random.default_rng(1)


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_logsumexp(x):
    x = np.asarray(x, np.float64)
    m = x.max()
    return m + np.log(np.exp(x - m).sum())


# --------------------------------------------------------------------------- LiPO-λ


def np_lipo(s, y, mask, w=None):
    out, has = [], []
    for row in range(s.shape[0]):
        idx = np.flatnonzero(mask[row])
        ss, yy = s[row].astype(np.float64), y[row].astype(np.float64)
        ww = np.ones_like(ss) if w is None else w[row]
        ranked = idx[np.argsort(-ss[idx], kind="stable")]
        rank = {item: k + 1 for k, item in enumerate(ranked)}
        total, pairs = 0.0, 0
        for i in idx:
            for j in idx:
                if yy[i] <= yy[j]:
                    continue  # ties and reversed pairs form no pair
                gain = abs((2 ** yy[i] - 1) - (2 ** yy[j] - 1))
                disc = abs(1 / np.log2(1 + rank[i]) - 1 / np.log2(1 + rank[j]))
                total += ww[i] * gain * disc * np_softplus(-(ss[i] - ss[j]))
                pairs += 1
        out.append(total)
        has.append(pairs > 0)
    return np.array(out), np.array(has)


def test_lipo_lambda_matches_numpy():
    s = RNG.normal(size=(10, 6)).astype(np.float32)
    y = RNG.integers(0, 4, size=(10, 6)).astype(np.float32)  # graded, with ties
    y[2] = 1.0  # all tied: no pair, the list does not count
    w = RNG.uniform(0.5, 2.0, size=(10, 6)).astype(np.float32)
    mask = RNG.random((10, 6)) < 0.8
    mask[0] = True
    expected, has = np_lipo(s, y, mask, w)
    got = lipo_lambda(s, y, where=mask, weights=w, reduce_fn=None)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    mean = lipo_lambda(s, y, where=mask, weights=w)
    np.testing.assert_allclose(mean, expected[has].mean(), rtol=1e-5)


def test_lambda_weights_match_rax_dcg_lambdaweight():
    """rax's DCG lambda weight is the same ``|ΔG| |Δ(1/D)|`` times the (constant) list size."""
    s = RNG.normal(size=(5, 6)).astype(np.float32)
    y = RNG.integers(0, 4, size=(5, 6)).astype(np.float32)
    mask = RNG.random((5, 6)) < 0.8
    ours = lambda_weights(s, y, where=mask)
    theirs = rax.dcg_lambdaweight(s, y, where=mask).reshape(5, 6, 6) / 6
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
    total = rax.pairwise_logistic_loss(
        s, y, where=mask, lambdaweight_fn=rax.dcg_lambdaweight, reduce_fn=jnp.sum
    )
    np.testing.assert_allclose(
        lipo_lambda(s, y, where=mask, reduce_fn=jnp.sum), total / 6, rtol=1e-5
    )


def test_lipo_lambda_weights_are_constants_and_two_items_is_weighted_dpo():
    s = jnp.array([[0.4, -0.3]])
    y = jnp.array([[1.0, 0.0]])
    delta = 1.0 * (1.0 - 1.0 / np.log2(3.0))
    np.testing.assert_allclose(lipo_lambda(s, y), delta * np_softplus(-0.7), rtol=1e-6)
    g = jax.grad(lambda x: lipo_lambda(x, y))(s)
    np.testing.assert_allclose(
        g[0, 0], -delta * jax.nn.sigmoid(-0.7), rtol=1e-6
    )  # Δ not differentiated
    np.testing.assert_allclose(g.sum(), 0.0, atol=1e-7)


# --------------------------------------------------------------------------- RankList


def np_ranklist(s, y, mask, skip, w=None):
    out, has = [], []
    for row in range(s.shape[0]):
        idx = np.flatnonzero(mask[row])
        order = idx[np.argsort(-y[row, idx], kind="stable")]
        ss, yy = s[row].astype(np.float64), y[row]
        ww = np.ones_like(ss) if w is None else w[row]
        total, any_ = 0.0, False
        for k, item in enumerate(order):
            stop = len(order) if skip is None else min(len(order), k + 1 + skip)
            lower = [j for j in order[k + 1 : stop] if yy[j] < yy[item]]
            if lower:
                total += ww[item] * np_softplus(np_logsumexp(ss[lower]) - ss[item])
                any_ = True
        out.append(total)
        has.append(any_)
    return np.array(out), np.array(has)


@pytest.mark.parametrize("skip", [None, 1, 2])
def test_ranklist_matches_numpy(skip):
    s = RNG.normal(size=(10, 6)).astype(np.float32)
    y = RNG.integers(0, 4, size=(10, 6)).astype(np.float32)
    w = RNG.uniform(0.5, 2.0, size=(10, 6)).astype(np.float32)
    mask = RNG.random((10, 6)) < 0.8
    expected, has = np_ranklist(s, y, mask, skip, w)
    got = ranklist(s, y, skip=skip, where=mask, weights=w, reduce_fn=None)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        ranklist(s, y, skip=skip, where=mask, weights=w), expected[has].mean(), rtol=1e-5
    )


def test_ranklist_special_cases():
    s = RNG.normal(size=(3, 5)).astype(np.float32)
    y = np.tile(np.arange(5, 0, -1, dtype=np.float32), (3, 1))  # strictly ordered, sorted
    # skip=1: one RankNet term per adjacent pair.
    adjacent = np_softplus(s[:, 1:] - s[:, :-1]).sum(-1)
    np.testing.assert_allclose(ranklist(s, y, skip=1, reduce_fn=None), adjacent, rtol=1e-5)
    # Each term upper-bounds the worst RankNet term of its item (LSE >= max).
    worst = np.array(
        [sum(np_softplus(s[r, k + 1 :].max() - s[r, k]) for k in range(4)) for r in range(3)]
    )
    assert np.all(np.asarray(ranklist(s, y, reduce_fn=None)) >= worst - 1e-6)
    with pytest.raises(ValueError, match="skip"):
        ranklist(s, y, skip=0)


# --------------------------------------------------------------------------- properties


def _grades(rng, shape):
    return rng.integers(0, 4, size=shape).astype(np.float32)


def _weights(rng, shape):
    return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)


CASES = [
    testing.ObjectiveCase(
        "lipo_lambda",
        lambda s, y, w, **kw: lipo_lambda(s, y, weights=w, **kw),
        lambda r, b, sc: (normal(r, (*b, 5), sc), _grades(r, (*b, 5)), _weights(r, (*b, 5))),
        grad_argnums=(0, 2),
        mask_level="items",
    ),
    testing.ObjectiveCase(
        "ranklist_skip2",
        lambda s, y, w, **kw: ranklist(s, y, weights=w, **kw),
        lambda r, b, sc: (normal(r, (*b, 5), sc), _grades(r, (*b, 5)), _weights(r, (*b, 5))),
        kwargs={"skip": 2},
        grad_argnums=(0, 2),
        mask_level="items",
    ),
]


@pytest.mark.parametrize("check", sorted(testing.CHECKS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_properties(case, check):
    testing.CHECKS[check](case)
