"""Secrets-II recipes, hierarchical pairs, SparsePO and InfiFPO vs NumPy, plus properties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpref import losses, testing
from tests.losses.cases import logps, normal


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_bce(z, alpha):
    """-(1-a) log sigma(z) - a log sigma(-z)."""
    return (1 - alpha) * np_softplus(-z) + alpha * np_softplus(z)


def masked_mean(x, mask):
    return x[mask].mean() if mask.any() else 0.0


RNG = np.random.default_rng(0)

# --------------------------------------------------------------------- strength recipes


def np_strength_recipe(rc, rr, mu, flip_below, alpha, alpha_below, adaptive):
    rc, rr, mu = rc.astype(np.float64), rr.astype(np.float64), mu.astype(np.float64)
    out = np.empty_like(rc)
    for i in range(rc.size):
        c, r, m = rc[i], rr[i], mu[i]
        if flip_below is not None and m < flip_below:
            c, r, m = r, c, -m
        a = alpha if m < alpha_below else 0.0
        z = c - r - (m if adaptive else 0.0)
        out[i] = np_bce(z, a)
    return out


@pytest.mark.parametrize(
    "flip_below,alpha,adaptive",
    [
        (None, 0.0, False),
        (0.0, 0.0, False),
        (None, 0.0, True),
        (-0.3, 0.0, True),
        (None, 0.2, True),
        (0.1, 0.3, False),
    ],
)
def test_strength_recipe_matches_numpy(flip_below, alpha, adaptive):
    rc, rr, mu = RNG.normal(size=(3, 32)).astype(np.float32)
    mask = RNG.random(32) < 0.7
    expected = np_strength_recipe(rc, rr, mu, flip_below, alpha, 0.0, adaptive)
    kwargs = dict(
        flip_below=flip_below, soft_label=alpha, soft_label_below=0.0, adaptive_margin=adaptive
    )
    per = losses.strength_recipe_loss(rc, rr, mu, reduce_fn=None, **kwargs)
    np.testing.assert_allclose(per, expected, rtol=1e-5, atol=1e-6)
    got = losses.strength_recipe_loss(rc, rr, mu, where=mask, **kwargs)
    np.testing.assert_allclose(got, expected[mask].mean(), rtol=1e-5)


def test_flip_bottom_fraction_equals_swapping_the_data():
    rc, rr, mu = RNG.normal(size=(3, 50)).astype(np.float32)
    threshold = float(jnp.quantile(mu, 0.2))
    flipped = losses.strength_recipe_loss(rc, rr, mu, flip_below=threshold, reduce_fn=None)
    swap = mu < threshold
    assert swap.sum() == 10
    manual = losses.bradley_terry(np.where(swap, rr, rc), np.where(swap, rc, rr), reduce_fn=None)
    np.testing.assert_allclose(flipped, manual, rtol=1e-6)


def test_strength_gets_no_gradient():
    rc, rr, mu = RNG.normal(size=(3, 8)).astype(np.float32)
    g = jax.grad(lambda m: losses.strength_recipe_loss(rc, rr, m, adaptive_margin=True))(mu)
    np.testing.assert_array_equal(g, 0.0)


# --------------------------------------------------------------------- hierarchical


def np_hierarchical(s, tau, m, pairs, level_mask):
    out, valid = [], []
    for row, lm in zip(s.astype(np.float64), level_mask, strict=True):
        n = len(row)
        cand = (
            [(i, j) for i in range(n) for j in range(i + 1, n)]
            if pairs == "all"
            else [(i, i + 1) for i in range(n - 1)]
        )
        terms = [
            np_softplus(-((row[i] - row[j]) / tau - m * (j - i)))
            for i, j in cand
            if lm[i] and lm[j]
        ]
        out.append(np.mean(terms) if terms else 0.0)
        valid.append(bool(terms))
    return np.array(out), np.array(valid)


@pytest.mark.parametrize("pairs", ["all", "adjacent"])
def test_hierarchical_matches_numpy(pairs):
    s = RNG.normal(size=(12, 5)).astype(np.float32)
    level_mask = RNG.random((12, 5)) < 0.8
    level_mask[0] = [True, False, False, False, False]  # no valid pair: contributes nothing
    expected, valid = np_hierarchical(s, 0.7, 0.3, pairs, level_mask)
    per = losses.hierarchical_pairwise(
        s, temperature=0.7, margin=0.3, pairs=pairs, level_where=level_mask, reduce_fn=None
    )
    np.testing.assert_allclose(per, expected, rtol=1e-5, atol=1e-7)
    mean = losses.hierarchical_pairwise(
        s, temperature=0.7, margin=0.3, pairs=pairs, level_where=level_mask
    )
    np.testing.assert_allclose(mean, expected[valid].mean(), rtol=1e-5)


def test_hierarchical_prefers_the_graded_order():
    ordered = jnp.array([[3.0, 2.0, 1.0, 0.0]])
    reversed_ = ordered[:, ::-1]
    assert losses.hierarchical_pairwise(ordered, margin=0.1) < losses.hierarchical_pairwise(
        reversed_, margin=0.1
    )


def test_hierarchical_rejects_bad_input():
    with pytest.raises(ValueError, match="pairs must be one of"):
        losses.hierarchical_pairwise(jnp.zeros((2, 3)), pairs="skip")
    with pytest.raises(ValueError, match=r"\[..., L \+ 1\]"):
        losses.hierarchical_pairwise(jnp.zeros((2, 1)))


# --------------------------------------------------------------------- SparsePO


def np_sparse_po(lp, ref, mu, md, kl, tok, beta, l1u, l1d):
    lp, ref, mu, md, kl = (np.where(tok, x.astype(np.float64), 0.0) for x in (lp, ref, mu, md, kl))
    u = (mu * (lp - ref)).sum(-1)
    k = (md * kl).sum(-1)
    z = (u[:, 0] - u[:, 1]) - (k[:, 1] - k[:, 0])
    return np_softplus(-beta * z) + l1u * np.abs(mu).sum((-2, -1)) + l1d * np.abs(md).sum((-2, -1))


def test_sparse_po_matches_numpy():
    b, t = 6, 7
    lp, ref = logps(RNG, (b, 2, t), 2.0), logps(RNG, (b, 2, t), 2.0)
    mu, md = RNG.random((2, b, 2, t)).astype(np.float32)
    kl = np.abs(RNG.normal(size=(b, 2, t))).astype(np.float32)
    tok = RNG.random((b, 2, t)) < 0.8
    expected = np_sparse_po(lp, ref, mu, md, kl, tok, 0.5, 0.01, 0.02)
    got = losses.sparse_po(
        lp,
        ref,
        mu,
        kl_mask=md,
        token_kl=kl,
        token_where=tok,
        beta=0.5,
        l1_reward=0.01,
        l1_kl=0.02,
        reduce_fn=None,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    common = losses.sparse_po(lp, ref, mu, token_kl=kl, token_where=tok, beta=0.5, reduce_fn=None)
    np.testing.assert_allclose(common, np_sparse_po(lp, ref, mu, mu, kl, tok, 0.5, 0, 0), rtol=1e-5)


def test_sparse_po_with_unit_masks_and_no_kl_is_dpo():
    lp, ref = logps(RNG, (5, 2, 4), 1.0), logps(RNG, (5, 2, 4), 1.0)
    got = losses.sparse_po(lp, ref, np.ones_like(lp), beta=0.3)
    s, r = lp.sum(-1), ref.sum(-1)
    np.testing.assert_allclose(
        got, losses.dpo(s[:, 0], s[:, 1], r[:, 0], r[:, 1], beta=0.3), rtol=1e-6
    )


def test_token_kl_divergence_matches_numpy():
    from scipy.special import log_softmax

    pl, rl = RNG.normal(size=(2, 3, 4, 11)).astype(np.float32)
    tok = RNG.random((3, 4)) < 0.7
    lp, lr = log_softmax(pl.astype(np.float64), -1), log_softmax(rl.astype(np.float64), -1)
    expected = np.where(tok, (np.exp(lr) * (lr - lp)).sum(-1), 0.0)
    pl[~tok] = -np.inf  # masked positions may hold anything
    got = losses.token_kl_divergence(pl, rl, where=tok)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(got) >= -1e-6)


def test_activation_mask_range_and_normalisation():
    acts = RNG.normal(size=(3, 6, 8)).astype(np.float32)
    tok = np.ones((3, 6), bool)
    tok[1, 4:] = False
    tok[2] = False  # no valid token: all zeros, no NaN
    m = np.asarray(losses.activation_token_mask(acts, token_where=tok))
    assert np.all((m >= 0) & (m <= 1)) and np.all(np.isfinite(m))
    np.testing.assert_array_equal(m[~tok], 0.0)
    a = acts.mean(-1)
    for row in range(2):
        v = a[row][tok[row]]
        expected = (v - v.min()) / (v.max() - v.min())  # z-norm then min-max = min-max
        np.testing.assert_allclose(m[row][tok[row]], expected, rtol=1e-4, atol=1e-5)
    g = jax.grad(lambda x: losses.activation_token_mask(x, token_where=tok).sum())(acts)
    np.testing.assert_array_equal(g, 0.0)  # a constant mask


def test_learned_mask_is_sparse_trainable_and_matches_numpy():
    params = losses.init_learned_token_mask(jax.random.key(0), num_layers=3, d_model=8)
    h = RNG.normal(size=(3, 2, 5, 8)).astype(np.float32)
    m = np.asarray(losses.learned_token_mask(params, h))
    hn = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-6)
    w, b, c = (np.asarray(params[k]) for k in ("layer_weights", "layer_biases", "mixer"))
    per = np.maximum(np.einsum("lbtd,ld->lbt", hn, w) + b[:, None, None], 0)
    expected = np.maximum((c[:, None, None] * per).sum(0), 0)
    np.testing.assert_allclose(m, expected, rtol=1e-4, atol=1e-6)
    lp, ref = logps(RNG, (2, 2, 5), 1.0), logps(RNG, (2, 2, 5), 1.0)

    def loss(p):
        mask = losses.learned_token_mask(p, np.broadcast_to(h[:, :, None], (3, 2, 2, 5, 8)))
        return losses.sparse_po(lp, ref, mask, l1_reward=0.01)

    grads = jax.grad(loss)(params)
    assert float(jnp.abs(grads["layer_weights"]).sum()) > 0


def test_sparse_po_rejects_missing_pair_axis():
    with pytest.raises(ValueError, match=r"\[..., 2, time\]"):
        losses.sparse_po(jnp.zeros((4, 3, 5)), jnp.zeros((4, 3, 5)), jnp.ones((4, 3, 5)))


# --------------------------------------------------------------------- InfiFPO


def np_fused(sc, sr, fusion, pc=None, pr=None, w=None):
    sc, sr = sc.astype(np.float64), sr.astype(np.float64)
    if pc is not None:
        sc, sr = np.maximum(sc, pc[:, None]), np.minimum(sr, pr[:, None])
    if fusion == "mean":
        w = np.full(sc.shape[-1], 1 / sc.shape[-1]) if w is None else w / w.sum()
        return sc @ w, sr @ w
    idx = np.argmax(sc - sr, -1)
    return sc[np.arange(len(idx)), idx], sr[np.arange(len(idx)), idx]


@pytest.mark.parametrize("fusion", ["mean", "max_margin"])
@pytest.mark.parametrize("clip", [False, True])
def test_infifpo_matches_numpy(fusion, clip):
    b, s = 10, 3
    pc, pr = logps(RNG, (b,), 2.0), logps(RNG, (b,), 2.0)
    sc, sr = logps(RNG, (b, s), 2.0), logps(RNG, (b, s), 2.0)
    piv = (logps(RNG, (b,), 2.0), logps(RNG, (b,), 2.0)) if clip else (None, None)
    w = np.array([1.0, 2.0, 3.0], np.float32) if fusion == "mean" else None
    fc, fr = np_fused(sc, sr, fusion, *piv, w=w)
    h = (pc - fc) - (pr - fr)
    expected = np_softplus(-0.5 * h)
    got = losses.infifpo(
        pc,
        pr,
        sc,
        sr,
        beta=0.5,
        fusion=fusion,
        weights=w,
        pivot_chosen_logps=piv[0],
        pivot_rejected_logps=piv[1],
        reduce_fn=None,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_infifpo_rejects_bad_options():
    x, s = jnp.zeros(2), jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="fusion must be one of"):
        losses.infifpo(x, x, s, s, fusion="median")
    with pytest.raises(ValueError, match="same shape"):
        losses.fused_reference_logps(s, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="both"):
        losses.fused_reference_logps(s, s, pivot_chosen_logps=x)


# --------------------------------------------------------------------- property matrix

CASES = [
    testing.ObjectiveCase(
        "strength_recipe",
        losses.strength_recipe_loss,
        lambda r, b, s: (normal(r, b, s), normal(r, b, s), normal(r, b, 1.0)),
        kwargs={"flip_below": -0.5, "soft_label": 0.1, "adaptive_margin": True},
        grad_argnums=(0, 1),
    ),
    testing.ObjectiveCase(
        "hierarchical_pairwise",
        losses.hierarchical_pairwise,
        lambda r, b, s: (normal(r, (*b, 4), s),),
        kwargs={"margin": 0.2, "temperature": 0.5},
    ),
    testing.ObjectiveCase(
        "sparse_po",
        losses.sparse_po,
        lambda r, b, s: (
            logps(r, (*b, 2, 5), s),
            logps(r, (*b, 2, 5), s),
            r.random((*b, 2, 5)).astype(np.float32),
        ),
        kwargs={"beta": 0.5, "l1_reward": 0.01},
        grad_argnums=(0, 2),
    ),
    testing.ObjectiveCase(
        "sparse_po_kl",
        lambda lp, ref, m, kl, **kw: losses.sparse_po(lp, ref, m, token_kl=kl, **kw),
        lambda r, b, s: (
            logps(r, (*b, 2, 5), s),
            logps(r, (*b, 2, 5), s),
            r.random((*b, 2, 5)).astype(np.float32),
            np.abs(normal(r, (*b, 2, 5), s)),
        ),
        kwargs={"beta": 0.5, "l1_kl": 0.01},
        grad_argnums=(0, 2, 3),
    ),
    testing.ObjectiveCase(
        "infifpo",
        losses.infifpo,
        lambda r, b, s: (
            logps(r, b, s),
            logps(r, b, s),
            logps(r, (*b, 3), s),
            logps(r, (*b, 3), s),
        ),
        kwargs={"fusion": "max_margin"},
        grad_argnums=(0, 1),
    ),
]


@pytest.mark.parametrize("check", sorted(testing.CHECKS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_properties(case, check):
    testing.CHECKS[check](case)
