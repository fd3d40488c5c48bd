"""Plackett-Luce, ListNet and PRO vs rax and independent NumPy re-derivations, plus properties."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rax

from jaxpref import testing
from jaxpref.losses.listwise import listnet, logratio_scores, plackett_luce, pro
from tests.losses.cases import logps, normal

RNG = np.random.default_rng(0)


def np_logsumexp(x):
    x = np.asarray(x, np.float64)
    m = x.max()
    return m + np.log(np.exp(x - m).sum())


def label_order(y, mask):
    """Valid item indices sorted by label, best first; ties keep input order."""
    idx = np.flatnonzero(mask)
    return idx[np.argsort(-y[idx], kind="stable")]


# --------------------------------------------------------------------------- Plackett-Luce


def np_plackett_luce(s, y, mask, top_k=None, w=None):
    out = []
    for row in range(s.shape[0]):
        order = label_order(y[row], mask[row])
        ss = s[row].astype(np.float64)
        ww = np.ones_like(ss) if w is None else w[row]
        n = len(order)
        stop = n - 1 if top_k is None else min(top_k, n - 1)
        out.append(
            sum(ww[order[k]] * (np_logsumexp(ss[order[k:]]) - ss[order[k]]) for k in range(stop))
        )
    return np.array(out)


def test_plackett_luce_matches_numpy_with_masks_weights_and_top_k():
    s, y = RNG.normal(size=(2, 8, 6)).astype(np.float32)
    w = RNG.uniform(0.5, 2.0, size=(8, 6)).astype(np.float32)
    mask = RNG.random((8, 6)) < 0.7
    mask[0], mask[1] = True, [False, False, True, False, False, False]
    for top_k in (None, 1, 3):
        got = plackett_luce(s, y, top_k=top_k, weights=w, where=mask, reduce_fn=None)
        np.testing.assert_allclose(
            got, np_plackett_luce(s, y, mask, top_k, w), rtol=1e-5, atol=1e-6
        )


def test_plackett_luce_equals_rax_listmle_without_ties():
    """Parity with ``rax.listmle_loss``. Per-list values agree exactly, masks included.

    rax sums ``-(s - logcumsumexp)`` over all valid positions, including the last, whose
    term is 0. So its per-list value equals ours. The reductions differ in which lists
    count. rax's ``jnp.mean`` divides by the lists with at least one valid item. Ours
    divides by the lists with at least two, since a one-item list carries no ranking
    information. We therefore compare ``reduce_fn=None`` and ``jnp.sum`` directly, and the
    mean as rax's sum over our count. Labels are continuous, so there are no ties and the
    two sorts agree.
    """
    s, y = RNG.normal(size=(2, 16, 7)).astype(np.float32)
    np.testing.assert_allclose(
        plackett_luce(s, y, reduce_fn=None), rax.listmle_loss(s, y, reduce_fn=None), rtol=1e-5
    )
    np.testing.assert_allclose(plackett_luce(s, y), rax.listmle_loss(s, y), rtol=1e-5)
    mask = RNG.random((16, 7)) < 0.6
    mask[0], mask[1], mask[2] = False, [True] + [False] * 6, True  # empty, single, full lists
    ours = plackett_luce(s, y, where=mask, reduce_fn=None)
    theirs = rax.listmle_loss(s, y, where=mask, reduce_fn=None)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    total = rax.listmle_loss(s, y, where=mask, reduce_fn=jnp.sum)
    np.testing.assert_allclose(plackett_luce(s, y, where=mask, reduce_fn=jnp.sum), total, rtol=1e-5)
    counted = (mask.sum(-1) >= 2).sum()
    np.testing.assert_allclose(plackett_luce(s, y, where=mask), total / counted, rtol=1e-5)
    # rax's mean also counts the single-item list (which contributes 0): a smaller mean.
    assert float(rax.listmle_loss(s, y, where=mask)) < float(plackett_luce(s, y, where=mask))


def test_plackett_luce_ties_default_is_input_order_and_matches_rax():
    s = np.array([[0.3, -1.0, 2.0, 0.5]], np.float32)
    y = np.array([[2.0, 1.0, 1.0, 0.0]], np.float32)  # items 1 and 2 tied
    value = float(plackett_luce(s, y))
    np.testing.assert_allclose(value, np_plackett_luce(s, y, np.ones_like(y, bool))[0], rtol=1e-6)
    np.testing.assert_allclose(value, rax.listmle_loss(s, y), rtol=1e-6)  # rax: stable too
    # Swapping the tied items' positions changes the value: the default depends on order.
    swapped = float(plackett_luce(s[:, [0, 2, 1, 3]], y[:, [0, 2, 1, 3]]))
    assert abs(swapped - value) > 1e-3
    assert value == float(plackett_luce(s, y))  # deterministic


def np_tie_averaged_pl(s, y):
    """Mean PL loss over every order of the tied items (exact tie-averaged value)."""
    s, y = s.astype(np.float64), y.astype(np.float64)
    levels = sorted(set(y.tolist()), reverse=True)
    groups = [np.flatnonzero(y == v) for v in levels]
    values = []
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        order = np.concatenate([np.array(p) for p in perms])
        values.append(sum(np_logsumexp(s[order[k:]]) - s[order[k]] for k in range(len(order) - 1)))
    return np.mean(values), sorted(set(np.round(values, 6)))


def test_plackett_luce_random_tie_breaking_averages_to_the_tie_averaged_loss():
    s = np.array([0.3, -1.0, 2.0, 0.5, 1.0], np.float32)
    y = np.array([2.0, 1.0, 1.0, 1.0, 0.0], np.float32)  # three tied items: 6 orders
    expected, distinct = np_tie_averaged_pl(s, y)
    keys = jax.random.split(jax.random.key(0), 3000)
    values = np.asarray(jax.vmap(lambda k: plackett_luce(s, y, key=k))(keys), np.float64)
    # Each key realises one of the tie orders, and all of them occur.
    assert sorted(set(np.round(values, 4))) == pytest.approx(np.round(distinct, 4), abs=2e-4)
    stderr = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - expected) < 5 * stderr
    # The fixed input order is one particular realisation, not the average.
    assert abs(float(plackett_luce(s, y)) - expected) > 10 * stderr
    # The same key gives the same tie-break.
    assert float(plackett_luce(s, y, key=keys[0])) == float(plackett_luce(s, y, key=keys[0]))


def test_plackett_luce_top_k():
    s, y = RNG.normal(size=(2, 5, 6)).astype(np.float32)
    full = plackett_luce(s, y, reduce_fn=None)
    np.testing.assert_allclose(plackett_luce(s, y, top_k=5, reduce_fn=None), full, rtol=1e-6)
    np.testing.assert_allclose(plackett_luce(s, y, top_k=50, reduce_fn=None), full, rtol=1e-6)
    best = np.argmax(y, -1)
    top1 = np.array([np_logsumexp(s[r]) - s[r, best[r]] for r in range(5)])  # softmax CE
    np.testing.assert_allclose(plackett_luce(s, y, top_k=1, reduce_fn=None), top1, rtol=1e-5)
    values = [np.asarray(plackett_luce(s, y, top_k=k, reduce_fn=None)) for k in range(1, 6)]
    assert all(np.all(a <= b + 1e-6) for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="top_k"):
        plackett_luce(s, y, top_k=0)


def test_plackett_luce_prefers_the_label_order_and_handles_minus_inf_padding():
    y = jnp.array([[3.0, 2.0, 1.0, 0.0]])
    good, bad = jnp.array([[3.0, 2.0, 1.0, 0.0]]), jnp.array([[0.0, 1.0, 2.0, 3.0]])
    assert plackett_luce(good, y) < plackett_luce(bad, y)
    padded = jnp.array([[3.0, 2.0, -jnp.inf, -jnp.inf]])
    mask = jnp.array([[True, True, False, False]])
    value, grad = jax.value_and_grad(lambda x: plackett_luce(x, y, where=mask))(padded)
    np.testing.assert_allclose(value, plackett_luce(padded[:, :2], y[:, :2]), rtol=1e-6)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[:, 2:] == 0)


def test_logratio_scores():
    lp, ref = logps(RNG, (3, 4), 2.0), logps(RNG, (3, 4), 2.0)
    np.testing.assert_allclose(logratio_scores(lp, ref, beta=0.3), 0.3 * (lp - ref), rtol=1e-6)
    np.testing.assert_allclose(logratio_scores(lp, None, beta=0.3), 0.3 * lp, rtol=1e-6)
    g = jax.grad(lambda r: logratio_scores(lp, r).sum())(ref)
    np.testing.assert_array_equal(g, 0.0)  # the reference is a constant
    mask = np.array([[True, True, False, False]] * 3)
    bad = np.where(mask, lp, -np.inf)
    out = logratio_scores(bad, ref, where=mask)
    assert np.all(np.isfinite(out)) and np.all(np.asarray(out)[~mask] == 0)


# --------------------------------------------------------------------------- ListNet


def np_listnet(s, y, mask, temperature, w=None):
    out = []
    for row in range(s.shape[0]):
        idx = np.flatnonzero(mask[row])
        ss, yy = s[row, idx].astype(np.float64), y[row, idx].astype(np.float64)
        ww = np.ones(len(idx)) if w is None else w[row, idx]
        p = np.exp(yy / temperature - np_logsumexp(yy / temperature))
        logq = ss - np_logsumexp(ss)
        out.append(-(ww * p * logq).sum() if len(idx) >= 2 else 0.0)
    return np.array(out)


@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_listnet_matches_numpy(temperature):
    s, y = RNG.normal(size=(2, 7, 5)).astype(np.float32)
    w = RNG.uniform(0.5, 2.0, size=(7, 5)).astype(np.float32)
    mask = RNG.random((7, 5)) < 0.7
    mask[0], mask[1] = True, [True, False, False, False, False]
    got = listnet(s, y, label_temperature=temperature, where=mask, weights=w, reduce_fn=None)
    expected = np_listnet(s, y, mask, temperature, w)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    mean = listnet(s, y, label_temperature=temperature, where=mask, weights=w)
    np.testing.assert_allclose(mean, expected[mask.sum(-1) >= 2].mean(), rtol=1e-5)


def test_listnet_one_hot_limit_is_softmax_cross_entropy_and_matches_rax():
    s = RNG.normal(size=(4, 5)).astype(np.float32)
    onehot = np.eye(5, dtype=np.float32)[[0, 3, 1, 4]]
    ce = np.array([np_logsumexp(s[r]) - s[r, onehot[r].argmax()] for r in range(4)])
    np.testing.assert_allclose(
        listnet(s, onehot, label_temperature=1e-3, reduce_fn=None), ce, rtol=1e-5
    )
    # rax.softmax_loss with label_fn = softmax(labels / T) is the same cross-entropy.
    y = RNG.normal(size=(4, 5)).astype(np.float32)
    theirs = rax.softmax_loss(
        s, y, label_fn=lambda a, where: jax.nn.softmax(a / 0.5, axis=-1), reduce_fn=None
    )
    np.testing.assert_allclose(
        listnet(s, y, label_temperature=0.5, reduce_fn=None), theirs, rtol=1e-5
    )
    with pytest.raises(ValueError, match="label_temperature"):
        listnet(s, y, label_temperature=0.0)


# --------------------------------------------------------------------------- PRO


def np_pro(s, r, mask, sft_weight, sft=None, w=None):
    """Restates the official compute_loss per list: rewards sorted descending."""
    out = []
    for row in range(s.shape[0]):
        order = label_order(r[row], mask[row])
        ss, rr = s[row, order].astype(np.float64), r[row, order].astype(np.float64)
        ww = np.ones(len(order)) if w is None else w[row, order]
        n = len(order)
        if n < 2:
            out.append(0.0)
            continue
        loss = 0.0
        for k in range(n - 1):
            neg_t = rr[k] - rr[k + 1 :]
            pos_t = neg_t.max()
            logits = np.concatenate([[ss[k] * pos_t], ss[k + 1 :] * neg_t])
            loss += ww[k] * (np_logsumexp(logits) - ss[k] * pos_t)
        best_lp = (ss if sft is None else sft[row, order].astype(np.float64))[0]
        out.append(loss + sft_weight * (n - 1) ** 2 * ww[0] * -best_lp)
    return np.array(out)


def test_pro_matches_numpy_restatement_of_the_official_code():
    s = logps(RNG, (9, 5), 1.0)
    r = RNG.normal(size=(9, 5)).astype(np.float32)
    r[3, :2] = r[3, 2]  # tied rewards: zero gaps
    sft = logps(RNG, (9, 5), 20.0)
    w = RNG.uniform(0.5, 2.0, size=(9, 5)).astype(np.float32)
    mask = RNG.random((9, 5)) < 0.75
    mask[0], mask[1] = True, [False, True, False, False, False]
    got = pro(s, r, sft_weight=0.05, sft_logps=sft, where=mask, weights=w, reduce_fn=None)
    np.testing.assert_allclose(got, np_pro(s, r, mask, 0.05, sft, w), rtol=1e-5, atol=1e-6)
    plain = pro(s, r, sft_weight=0.5, reduce_fn=None)
    np.testing.assert_allclose(plain, np_pro(s, r, np.ones_like(mask), 0.5), rtol=1e-5)


def test_pro_two_items_is_a_scaled_logistic_and_sft_gradient():
    s = jnp.array([[-1.0, -2.0]])
    r = jnp.array([[3.0, 1.0]])
    # n = 2: log(e^{2 s1} + e^{2 s2}) - 2 s1 = softplus(2 (s2 - s1)).
    np.testing.assert_allclose(pro(s, r, sft_weight=0.0), jax.nn.softplus(2 * (-1.0)), rtol=1e-6)
    g = jax.grad(lambda x: pro(x, r, sft_weight=1.0, sft_logps=x))(s)
    expected = -2 * jax.nn.sigmoid(-2.0) - 1.0  # ranking part + (n-1)^2 * d(-s1)
    np.testing.assert_allclose(g[0, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(jax.grad(lambda rr: pro(s, rr))(r), 0.0)  # rewards: constants


# --------------------------------------------------------------------------- properties


def _graded(rng, shape):
    return rng.normal(size=shape).astype(np.float32)  # continuous: no ties


def _weights(rng, shape):
    return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)


CASES = [
    testing.ObjectiveCase(
        "plackett_luce",
        lambda s, y, w, **kw: plackett_luce(s, y, weights=w, **kw),
        lambda r, b, sc: (normal(r, (*b, 5), sc), _graded(r, (*b, 5)), _weights(r, (*b, 5))),
        kwargs={"top_k": 3, "key": jax.random.key(1)},
        grad_argnums=(0, 2),
        mask_level="items",
    ),
    testing.ObjectiveCase(
        "listnet",
        lambda s, y, w, **kw: listnet(s, y, weights=w, **kw),
        lambda r, b, sc: (normal(r, (*b, 5), sc), _graded(r, (*b, 5)), _weights(r, (*b, 5))),
        kwargs={"label_temperature": 0.5},
        grad_argnums=(0, 2),
        mask_level="items",
    ),
    testing.ObjectiveCase(
        "pro",
        lambda s, r, sft, **kw: pro(s, r, sft_logps=sft, **kw),
        lambda r, b, sc: (
            logps(r, (*b, 5), sc),
            normal(r, (*b, 5), sc),
            logps(r, (*b, 5), sc),
        ),
        kwargs={"sft_weight": 0.1},
        grad_argnums=(0, 2),
        mask_level="items",
    ),
]


@pytest.mark.parametrize("check", sorted(testing.CHECKS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_properties(case, check):
    testing.CHECKS[check](case)
