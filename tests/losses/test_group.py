"""Group advantages, Pref-GRPO win rates and the clipped surrogate vs NumPy, plus properties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpref import testing
from jaxpref.losses.group import (
    clipped_surrogate,
    grpo_advantages,
    pref_grpo_advantages,
    preference_win_rates,
    rloo_advantages,
    surrogate_metrics,
)
from tests.losses.cases import logps, normal

RNG = np.random.default_rng(2)


def group_mask(shape, seed=0):
    mask = np.random.default_rng(seed).random(shape) < 0.7
    mask[0], mask[1] = True, False
    mask[2] = False
    mask[2, 0] = True  # a single valid member
    return mask


# --------------------------------------------------------------------------- advantages


def np_grpo(r, mask, scale, eps, ddof):
    out = np.zeros(r.shape)
    for row in range(r.shape[0]):
        idx = np.flatnonzero(mask[row])
        if len(idx) == 0:
            continue
        v = r[row, idx].astype(np.float64)
        centred = v - v.mean()
        if scale:
            std = np.sqrt((centred**2).sum() / max(len(v) - ddof, 1))
            centred = centred / (std + eps)
        out[row, idx] = centred
    return out


@pytest.mark.parametrize("scale,ddof", [(True, 1), (True, 0), (False, 1)])
def test_grpo_advantages_match_numpy(scale, ddof):
    r = RNG.normal(size=(6, 5)).astype(np.float32)
    mask = group_mask((6, 5))
    got = grpo_advantages(r, scale_by_std=scale, ddof=ddof, where=mask)
    np.testing.assert_allclose(got, np_grpo(r, mask, scale, 1e-4, ddof), rtol=1e-5, atol=1e-6)
    full = grpo_advantages(r, scale_by_std=scale, ddof=ddof)
    np.testing.assert_allclose(full, np_grpo(r, np.ones_like(mask), scale, 1e-4, ddof), rtol=1e-5)


def test_grpo_advantages_masked_members_are_excluded_and_equal_rewards_give_zero():
    r = RNG.normal(size=(4, 6)).astype(np.float32)
    mask = group_mask((4, 6), seed=3)
    poisoned = np.where(mask, r, np.nan)  # unscorable members may hold NaN
    got = np.asarray(grpo_advantages(poisoned, where=mask))
    for row in range(4):
        idx = np.flatnonzero(mask[row])
        np.testing.assert_allclose(got[row, idx], grpo_advantages(r[row, idx]), rtol=1e-6)
        np.testing.assert_array_equal(got[row, ~mask[row]], 0.0)
    equal = grpo_advantages(jnp.full((2, 4), 3.7))
    np.testing.assert_array_equal(equal, 0.0)  # std 0: the epsilon guard, no 0/0
    g = jax.grad(lambda x: grpo_advantages(x).sum())(r)
    np.testing.assert_array_equal(g, 0.0)  # constants


def test_rloo_advantages_match_numpy_and_the_identity():
    r = RNG.normal(size=(6, 5)).astype(np.float32)
    mask = group_mask((6, 5), seed=1)
    expected = np.zeros(r.shape)
    for row in range(6):
        idx = np.flatnonzero(mask[row])
        for i in idx:
            others = [j for j in idx if j != i]
            if others:
                expected[row, i] = r[row, i] - np.mean(r[row, others].astype(np.float64))
    got = rloo_advantages(np.where(mask, r, np.inf), where=mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    k = 5
    np.testing.assert_allclose(
        rloo_advantages(r), k / (k - 1) * (r - r.mean(-1, keepdims=True)), rtol=1e-5, atol=1e-6
    )


def np_win_rates(p, mask, hard):
    out = np.zeros(p.shape[:-1])
    for row in range(p.shape[0]):
        idx = np.flatnonzero(mask[row])
        if len(idx) < 2:
            continue
        for i in idx:
            wins = 0.0
            for j in idx:
                if j == i:
                    continue
                pij = p[row, i, j]
                wins += (1.0 if pij > 0.5 else 0.0 if pij < 0.5 else 0.5) if hard else pij
            out[row, i] = wins / (len(idx) - 1)
    return out


def judged_matrix(rng, batch, g):
    """One judgement per unordered pair (as the official code): P_ji = 1 - P_ij."""
    upper = rng.choice([0.0, 0.2, 0.5, 0.7, 1.0], size=(batch, g, g))
    p = np.triu(upper, 1)
    return (p + np.swapaxes(1 - p, -1, -2) * np.tril(np.ones((g, g)), -1)).astype(np.float32)


@pytest.mark.parametrize("hard", [True, False])
def test_win_rates_and_pref_grpo_match_numpy(hard):
    p = judged_matrix(RNG, 6, 5)
    mask = group_mask((6, 5), seed=2)
    rates = preference_win_rates(p, hard=hard, where=mask)
    expected = np_win_rates(p, mask, hard)
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-7)
    adv = pref_grpo_advantages(p, hard=hard, where=mask)
    np.testing.assert_allclose(adv, np_grpo(expected, mask, True, 1e-8, 1), rtol=1e-4, atol=1e-5)
    if hard:  # win rates of one judgement per pair: wins sum to the number of pairs
        n = mask.sum(-1)
        np.testing.assert_allclose(
            (np.asarray(rates) * (n[:, None] - 1)).sum(-1), np.where(n >= 2, n * (n - 1) / 2, 0)
        )


def test_pref_grpo_all_ties_give_zero_advantage():
    p = np.full((2, 4, 4), 0.5, np.float32)
    np.testing.assert_array_equal(preference_win_rates(p), 0.5)
    np.testing.assert_array_equal(pref_grpo_advantages(p), 0.0)
    with pytest.raises(ValueError, match=r"\[..., G, G\]"):
        preference_win_rates(np.zeros((3, 4)))


# --------------------------------------------------------------------------- surrogate


def np_surrogate(lp, old, ref, adv, tok, eps, eps_high, beta, normalization):
    lp, old, ref = (x.astype(np.float64) for x in (lp, old, ref))
    b, t = lp.shape
    totals, counts = np.zeros(b), tok.sum(-1)
    for i in range(b):
        for s in range(t):
            if not tok[i, s]:
                continue
            ratio = np.exp(lp[i, s] - old[i, s])
            surr = min(ratio * adv[i], np.clip(ratio, 1 - eps, 1 + eps_high) * adv[i])
            d = ref[i, s] - lp[i, s]
            totals[i] += -surr + beta * (np.exp(d) - d - 1)
    valid = counts > 0
    if normalization == "sequence":
        return np.mean(totals[valid] / counts[valid])
    if normalization == "token":
        return totals.sum() / counts.sum()
    return np.mean(totals[valid] / t)


@pytest.mark.parametrize("normalization", ["sequence", "token", "constant"])
def test_clipped_surrogate_matches_numpy(normalization):
    b, t = 6, 7
    lp = logps(RNG, (b, t), 1.0)
    old = lp + RNG.normal(scale=0.3, size=(b, t)).astype(np.float32)
    ref = lp + RNG.normal(scale=0.3, size=(b, t)).astype(np.float32)
    adv = RNG.normal(size=b).astype(np.float32)
    tok = RNG.random((b, t)) < 0.8
    tok[1] = False  # no completion tokens: not counted
    expected = np_surrogate(lp, old, ref, adv, tok, 0.2, 0.28, 0.04, normalization)
    got = clipped_surrogate(
        np.where(tok, lp, -np.inf),  # padding log-probs may be -inf
        old,
        ref,
        adv,
        token_where=tok,
        epsilon_high=0.28,
        normalization=normalization,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_clipped_surrogate_with_stop_gradient_old_policy_is_the_policy_gradient():
    lp = logps(RNG, (4, 5), 1.0)
    adv = RNG.normal(size=4).astype(np.float32)
    tok = RNG.random((4, 5)) < 0.8
    tok[:, 0] = True
    value, grad = jax.value_and_grad(
        lambda x: clipped_surrogate(x, None, None, adv, token_where=tok, beta=0.0)
    )(lp)
    np.testing.assert_allclose(value, -adv.mean(), rtol=1e-5)  # ρ = 1
    expected = -adv[:, None] * tok / tok.sum(-1, keepdims=True) / 4
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


def test_clipped_surrogate_kl_gradient_and_bad_options():
    lp = logps(RNG, (3, 4), 1.0)
    ref = logps(RNG, (3, 4), 1.0)
    zero = np.zeros(3, np.float32)
    g = jax.grad(lambda x: clipped_surrogate(x, None, ref, zero, beta=0.5))(lp)
    # d/dlp of (e^{ref-lp} - (ref-lp) - 1) = 1 - e^{ref-lp}; sequence mean over 4 tokens.
    np.testing.assert_allclose(g, 0.5 * (1 - np.exp(ref - lp)) / 4 / 3, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match=r"beta=0\.0"):
        clipped_surrogate(lp, None, None, zero)
    with pytest.raises(ValueError, match="normalization"):
        clipped_surrogate(lp, None, ref, zero, normalization="dapo")
    with pytest.raises(ValueError, match="epsilon"):
        clipped_surrogate(lp, None, ref, zero, epsilon=1.0)


def test_surrogate_metrics_match_numpy():
    b, t = 5, 6
    lp = logps(RNG, (b, t), 1.0)
    old = lp + RNG.normal(scale=0.5, size=(b, t)).astype(np.float32)
    ref = lp + RNG.normal(scale=0.5, size=(b, t)).astype(np.float32)
    adv = RNG.normal(size=b).astype(np.float32)
    tok = RNG.random((b, t)) < 0.8
    m = surrogate_metrics(lp, old, ref, adv, token_where=tok, epsilon=0.2, epsilon_high=0.3)
    ratio = np.exp(lp.astype(np.float64) - old)
    a = np.broadcast_to(adv[:, None], (b, t))
    low, high = (ratio < 0.8) & (a < 0), (ratio > 1.3) & (a > 0)
    d = ref.astype(np.float64) - lp
    np.testing.assert_allclose(m["clip_fraction"], (low | high)[tok].mean(), rtol=1e-6)
    np.testing.assert_allclose(m["low_clip_fraction"], low[tok].mean(), rtol=1e-6)
    np.testing.assert_allclose(m["high_clip_fraction"], high[tok].mean(), rtol=1e-6)
    np.testing.assert_allclose(m["ratio_mean"], ratio[tok].mean(), rtol=1e-5)
    np.testing.assert_allclose(m["kl"], (np.exp(d) - d - 1)[tok].mean(), rtol=1e-4)
    assert "kl" not in surrogate_metrics(lp, old, None, adv)


# --------------------------------------------------------------------------- properties


def _surrogate_args(rng, batch, scale):
    shape = (*batch, 6)
    lp = logps(rng, shape, scale)
    old = lp + normal(rng, shape, scale / 3)
    ref = lp + normal(rng, shape, scale / 3)
    tok = rng.random(shape) < 0.8
    tok[..., 0] = True
    return lp, old, ref, normal(rng, batch, 1.0), tok


def _surrogate_case(name, **kwargs):
    return testing.ObjectiveCase(
        name,
        lambda lp, old, ref, adv, tok, **kw: clipped_surrogate(
            lp, old, ref, adv, token_where=tok, **kw
        ),
        _surrogate_args,
        kwargs=kwargs,
    )


CASES = [
    _surrogate_case("surrogate_sequence", beta=0.04),
    _surrogate_case("surrogate_token_clip_higher", normalization="token", epsilon_high=0.28),
]


@pytest.mark.parametrize("check", sorted(testing.CHECKS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_properties(case, check):
    testing.CHECKS[check](case)
