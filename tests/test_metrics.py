"""Tests of :mod:`jaxpref.metrics` against NumPy re-derivations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpref import metrics

TOL = {"rtol": 1e-5, "atol": 1e-6}


def f64(x):
    return np.asarray(x, np.float64)


def random_mask(rng, shape):
    mask = rng.random(shape) < 0.6
    mask.reshape(-1)[0] = True
    mask.reshape(-1)[-1] = False
    return mask


def logps(rng, shape, scale=20.0):
    return (-scale * rng.random(shape) - 0.05).astype(np.float32)


def np_fraction(hits, mask):
    hits = np.asarray(hits, bool)
    return hits.mean() if mask is None else hits[mask].mean()


# --------------------------------------------------------------------------------------------
# implicit rewards and DPO reward metrics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_implicit_rewards_match_numpy(beta):
    rng = np.random.default_rng(0)
    pol, ref = logps(rng, (3, 4)), logps(rng, (3, 4))
    rewards = metrics.implicit_rewards(pol, ref, beta=beta)
    assert rewards.shape == (3, 4) and rewards.dtype == jnp.float32
    np.testing.assert_allclose(rewards, beta * (f64(pol) - f64(ref)), **TOL)


def test_implicit_rewards_are_detached():
    rng = np.random.default_rng(1)
    pol, ref = logps(rng, (5,)), logps(rng, (5,))
    g = jax.grad(lambda p, r: jnp.sum(metrics.implicit_rewards(p, r)), argnums=(0, 1))(pol, ref)
    assert all(np.all(np.asarray(x) == 0) for x in g)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_reward_accuracy_matches_numpy(masked):
    rng = np.random.default_rng(2)
    rc = rng.standard_normal(20).astype(np.float32)
    rr = rng.standard_normal(20).astype(np.float32)
    rr[:4] = rc[:4]  # ties
    mask = random_mask(rng, (20,)) if masked else None
    np.testing.assert_allclose(
        metrics.reward_accuracy(rc, rr, where=mask), np_fraction(rc > rr, mask), **TOL
    )


def test_reward_accuracy_ties_count_wrong():
    r = np.array([0.5, -1.0, 2.0], np.float32)
    assert float(metrics.reward_accuracy(r, r)) == 0.0
    assert float(metrics.reward_accuracy(r + np.float32(1.0), r)) == 1.0
    # One strict win, one tie, one loss.
    rr = np.array([0.0, -1.0, 3.0], np.float32)
    np.testing.assert_allclose(metrics.reward_accuracy(r, rr), 1.0 / 3.0, **TOL)


def test_reward_accuracy_fully_masked_is_zero():
    r = np.array([1.0, 2.0], np.float32)
    value = metrics.reward_accuracy(r, r - 1, where=np.zeros(2, bool))
    assert float(value) == 0.0


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_dpo_reward_metrics_match_numpy(masked, beta):
    rng = np.random.default_rng(3)
    pc, pr, rc, rr = (logps(rng, (4, 5)) for _ in range(4))
    mask = random_mask(rng, (4, 5)) if masked else None
    out = metrics.dpo_reward_metrics(pc, pr, rc, rr, beta=beta, where=mask)
    assert set(out) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
    }
    sel = (lambda x: x) if mask is None else (lambda x: x[mask])
    r_w = sel(beta * (f64(pc) - f64(rc)))
    r_l = sel(beta * (f64(pr) - f64(rr)))
    for key, expected in [
        ("rewards/chosen", r_w.mean()),
        ("rewards/rejected", r_l.mean()),
        ("rewards/margins", (r_w - r_l).mean()),
        ("rewards/accuracies", np.mean(r_w > r_l)),
    ]:
        assert out[key].shape == ()
        np.testing.assert_allclose(out[key], expected, rtol=1e-5, atol=1e-5, err_msg=key)


def test_dpo_reward_metrics_fully_masked_and_poisoned():
    pc = np.array([np.nan, np.inf], np.float32)
    ones = np.ones(2, np.float32)
    out = metrics.dpo_reward_metrics(pc, ones, ones, ones, where=np.zeros(2, bool))
    for key, value in out.items():
        assert float(value) == 0.0, key


def test_dpo_reward_metrics_are_detached():
    rng = np.random.default_rng(4)
    args = tuple(logps(rng, (5,)) for _ in range(4))
    g = jax.grad(lambda *a: sum(metrics.dpo_reward_metrics(*a).values()), argnums=(0, 1, 2, 3))(
        *args
    )
    assert all(np.all(np.asarray(x) == 0) for x in g)


# --------------------------------------------------------------------------------------------
# ranking accuracy (Chen et al., 2024)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_ranking_accuracy_matches_numpy(masked):
    rng = np.random.default_rng(5)
    chosen, rejected = logps(rng, (30,)), logps(rng, (30,))
    rejected[:3] = chosen[:3]  # likelihood ties are not correct rankings
    mask = random_mask(rng, (30,)) if masked else None
    np.testing.assert_allclose(
        metrics.ranking_accuracy(chosen, rejected, where=mask),
        np_fraction(chosen > rejected, mask),
        **TOL,
    )


def test_ranking_accuracy_fully_masked_is_zero():
    x = np.array([-1.0, -2.0], np.float32)
    value = metrics.ranking_accuracy(x, x - 1, where=np.zeros(2, bool))
    assert float(value) == 0.0 and not np.isnan(value)


def np_idealized(rc, rr, alpha, beta):
    with np.errstate(divide="ignore"):
        score = f64(rc) - f64(rr) + np.log(f64(alpha) / (1.0 - f64(alpha))) / beta
    return score


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_idealized_ranking_accuracy_matches_numpy(masked, beta):
    rng = np.random.default_rng(6)
    n = 40
    rc = logps(rng, (n,))
    rr = (rc + 10.0 * rng.standard_normal(n)).astype(np.float32)
    alpha = rng.uniform(0.02, 0.98, n).astype(np.float32)
    alpha[:4] = [0.0, 1.0, 0.5, 0.5]
    mask = random_mask(rng, (n,)) if masked else None
    score = np_idealized(rc, rr, alpha, beta)
    assert np.all(np.abs(score) > 1e-3)  # no pair sits on the decision boundary
    assert 0.1 < np.mean(score > 0) < 0.9  # both outcomes occur
    np.testing.assert_allclose(
        metrics.idealized_ranking_accuracy(rc, rr, alpha, beta=beta, where=mask),
        np_fraction(score > 0, mask),
        **TOL,
    )


def test_idealized_ranking_accuracy_certain_preferences_override_reference():
    # The reference disagrees (or agrees) as strongly as float32 allows; α ∈ {0, 1} decides.
    rc = np.array([-1e4, -1.0, -1e30, -1.0], np.float32)
    rr = np.array([-1.0, -1e4, -1.0, -1e30], np.float32)
    ira = lambda alpha: float(
        metrics.idealized_ranking_accuracy(rc, rr, np.full(4, alpha, np.float32), beta=0.1)
    )
    assert ira(1.0) == 1.0
    assert ira(0.0) == 0.0


def test_idealized_ranking_accuracy_even_preference_is_decided_by_reference():
    rc = np.array([-3.0, -5.0, -4.0, -2.0, -7.0], np.float32)
    # The reference ranks these pairs right, wrong, tied, right, wrong.
    rr = np.array([-4.0, -4.0, -4.0, -9.0, -6.5], np.float32)
    alpha = np.full(5, 0.5, np.float32)
    for beta in (0.01, 0.1, 10.0):
        value = metrics.idealized_ranking_accuracy(rc, rr, alpha, beta=beta)
        np.testing.assert_allclose(value, 2.0 / 5.0, **TOL)
        np.testing.assert_allclose(value, metrics.ranking_accuracy(rc, rr), **TOL)


def test_idealized_ranking_accuracy_beta_sets_the_trade_off():
    # Reference prefers y_l by 2 nats; α = 0.9 has log-odds log 9 ≈ 2.197.
    rc, rr, alpha = np.array([-6.0]), np.array([-4.0]), np.array([0.9])
    assert float(metrics.idealized_ranking_accuracy(rc, rr, alpha, beta=1.0)) == 1.0
    assert float(metrics.idealized_ranking_accuracy(rc, rr, alpha, beta=1.2)) == 0.0


def test_idealized_ranking_accuracy_masks_and_fully_masked():
    rc = np.array([-1.0, np.nan, -2.0, -3.0], np.float32)
    rr = np.array([-2.0, -1.0, -1.0, np.inf], np.float32)
    alpha = np.array([0.5, 0.3, 0.5, 7.0], np.float32)  # masked entries hold garbage
    mask = np.array([True, False, True, False])
    value = metrics.idealized_ranking_accuracy(rc, rr, alpha, beta=0.1, where=mask)
    np.testing.assert_allclose(value, 0.5, **TOL)
    empty = metrics.idealized_ranking_accuracy(rc, rr, alpha, beta=0.1, where=np.zeros(4, bool))
    assert float(empty) == 0.0 and not np.isnan(empty)


def test_idealized_ranking_accuracy_under_jit():
    rng = np.random.default_rng(7)
    rc, rr = logps(rng, (10,)), logps(rng, (10,))
    alpha = rng.uniform(0.05, 0.95, 10).astype(np.float32)
    alpha[:2] = [0.0, 1.0]
    score = np_idealized(rc, rr, alpha, 0.3)
    assert np.all(np.abs(score) > 1e-3)
    jitted = jax.jit(lambda a, b, c: metrics.idealized_ranking_accuracy(a, b, c, beta=0.3))
    np.testing.assert_allclose(jitted(rc, rr, alpha), np.mean(score > 0), **TOL)


# --------------------------------------------------------------------------------------------
# preference strength (Secrets of RLHF Part II)
# --------------------------------------------------------------------------------------------


def test_preference_strength_matches_numpy():
    rng = np.random.default_rng(8)
    d = (2.0 * rng.standard_normal((5, 7)) + 0.5).astype(np.float32)  # [M, pairs]
    mean, std = metrics.preference_strength(d)
    assert mean.shape == (7,) and std.shape == (7,)
    np.testing.assert_allclose(mean, np.mean(f64(d), axis=0), **TOL)
    np.testing.assert_allclose(std, np.std(f64(d), axis=0, ddof=0), **TOL)


def test_preference_strength_ensemble_on_last_axis():
    rng = np.random.default_rng(9)
    d = rng.standard_normal((2, 3, 4)).astype(np.float32)  # [..., M]
    mean, std = metrics.preference_strength(d, axis=-1)
    assert mean.shape == (2, 3)
    np.testing.assert_allclose(mean, np.mean(f64(d), axis=-1), **TOL)
    np.testing.assert_allclose(std, np.std(f64(d), axis=-1), **TOL)


@pytest.mark.parametrize("axis", [0, -1])
def test_preference_strength_with_member_mask(axis):
    rng = np.random.default_rng(10)
    d = (2.0 * rng.standard_normal((6, 5))).astype(np.float32)  # [M, pairs] ...
    mask = rng.random((6, 5)) < 0.6
    if axis == -1:  # ... or [pairs, M]
        d, mask = d.T, mask.T
    ensemble = np.moveaxis(np.arange(d.size).reshape(d.shape), axis, 0)
    mask[np.unravel_index(ensemble[0], d.shape)] = True  # at least one member per pair
    mask[np.unravel_index(ensemble[1], d.shape)] = False  # and one member left out
    poisoned = np.where(mask, d, np.nan).astype(np.float32)
    mean, std = metrics.preference_strength(poisoned, axis=axis, where=mask)
    dm, mm = np.moveaxis(f64(d), axis, -1), np.moveaxis(mask, axis, -1)
    expected_mean = [np.mean(row[m]) for row, m in zip(dm, mm, strict=True)]
    expected_std = [np.std(row[m], ddof=0) for row, m in zip(dm, mm, strict=True)]
    np.testing.assert_allclose(mean, expected_mean, **TOL)
    np.testing.assert_allclose(std, expected_std, **TOL)


def test_preference_strength_all_members_masked_is_zero():
    d = np.array([[1.0, 2.0], [3.0, -4.0]], np.float32)
    mask = np.array([[True, False], [True, False]])
    mean, std = metrics.preference_strength(d, where=mask)
    np.testing.assert_allclose(mean, [2.0, 0.0], **TOL)
    np.testing.assert_allclose(std, [1.0, 0.0], **TOL)


def test_preference_strength_is_detached():
    d = np.array([[1.0, 2.0], [3.0, -4.0], [0.0, 1.0]], np.float32)
    g = jax.grad(lambda x: jnp.sum(sum(metrics.preference_strength(x))))(d)
    assert np.all(np.asarray(g) == 0)
