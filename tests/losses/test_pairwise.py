"""Tests of the pairwise objectives in :mod:`jaxpref.losses.pairwise` and the registry.

Expected values come from NumPy/SciPy re-derivations of the formulas (float64, written here
from the papers' equations), from closed-form fixed points, and from the property harness
:mod:`jaxpref.testing`.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit, log_expit

from jaxpref import losses, testing
from jaxpref.losses import _registry

TOL = {"rtol": 1e-5, "atol": 1e-5}
SHAPE = (3, 5)


# --------------------------------------------------------------------------------------------
# NumPy re-derivations (float64)
# --------------------------------------------------------------------------------------------


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_neg_log_sigmoid(z):
    """-log σ(z) = softplus(-z)."""
    return np.logaddexp(0.0, -z)


def np_margin(pc, pr, rc, rr):
    if rc is None:
        return f64(pc) - f64(pr)
    return (f64(pc) - f64(rc)) - (f64(pr) - f64(rr))


def np_dpo(h, beta, eps=0.0):
    return (1 - eps) * np_neg_log_sigmoid(beta * h) + eps * np_neg_log_sigmoid(-beta * h)


def np_robust_dpo(h, beta, eps):
    ell = lambda z: np_neg_log_sigmoid(beta * z)
    return ((1 - eps) * ell(h) - eps * ell(-h)) / (1 - 2 * eps)


def np_ipo(h, beta):
    return (h - 1.0 / (2.0 * beta)) ** 2


def np_hinge(h, beta):
    return np.maximum(0.0, 1.0 - beta * h)


def np_soft_preference(h, beta, p):
    return -p * log_expit(beta * h) - (1 - p) * log_expit(-beta * h)


def np_simpo(aw, al, beta, gamma, eps=0.0):
    z = beta * (f64(aw) - f64(al)) - gamma
    return -(1 - eps) * log_expit(z) - eps * log_expit(-z)


def np_log_odds(a):
    """log(p / (1 - p)) = log p - log(1 - p) with log p = a clamped to at most -1e-6."""
    a = np.minimum(f64(a), -1e-6)
    return a - np.log1p(-np.exp(a))


def np_orpo(aw, al, beta):
    return -f64(aw) - beta * log_expit(np_log_odds(aw) - np_log_odds(al))


def np_bradley_terry(rc, rr, margin=0.0, alpha=0.0):
    d = f64(rc) - f64(rr) - f64(margin)
    return -(1 - alpha) * log_expit(d) - alpha * log_expit(-d)


def f64(x):
    return np.asarray(x, np.float64)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def logps(rng, shape, scale=20.0):
    """Negative float32 'summed log-probs'."""
    return (-scale * rng.random(shape) - 0.05).astype(np.float32)


def avg_logps(rng, shape, scale=3.0):
    """Negative float32 'length-averaged log-probs' in (-scale - 0.01, -0.01)."""
    return (-scale * rng.random(shape) - 0.01).astype(np.float32)


def random_mask(rng, shape):
    mask = rng.random(shape) < 0.6
    mask.reshape(-1)[0] = True
    mask.reshape(-1)[-1] = False
    return mask


def assert_reductions(call, per_expected, mask):
    """Checks ``call(where=mask, reduce_fn=...)`` for None, the default mean, and sum."""
    per_expected = f64(per_expected)
    if mask is None:
        valid = per_expected
        per_masked = per_expected
    else:
        valid = per_expected[mask]
        per_masked = np.where(mask, per_expected, 0.0)
    per = call(where=mask, reduce_fn=None)
    assert per.shape == per_expected.shape
    assert per.dtype == jnp.float32
    np.testing.assert_allclose(per, per_masked, **TOL)
    if mask is not None:
        assert np.all(np.asarray(per)[~mask] == 0.0)
    default = call(where=mask)  # reduce_fn defaults to the mean over valid pairs
    assert default.shape == ()
    np.testing.assert_allclose(default, valid.mean(), **TOL)
    np.testing.assert_allclose(call(where=mask, reduce_fn=jnp.mean), valid.mean(), **TOL)
    np.testing.assert_allclose(call(where=mask, reduce_fn=jnp.sum), valid.sum(), **TOL)


def pair_inputs(seed, shape=SHAPE):
    rng = np.random.default_rng(seed)
    return tuple(logps(rng, shape) for _ in range(4)), random_mask(rng, shape)


# --------------------------------------------------------------------------------------------
# NumPy parity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta, eps", [(0.1, 0.0), (0.5, 0.0), (0.1, 0.25), (1.0, 0.1)])
def test_dpo_matches_numpy(masked, beta, eps):
    (pc, pr, rc, rr), mask = pair_inputs(0)
    mask = mask if masked else None
    expected = np_dpo(np_margin(pc, pr, rc, rr), beta, eps)
    call = lambda **o: losses.dpo(pc, pr, rc, rr, beta=beta, label_smoothing=eps, **o)
    assert_reductions(call, expected, mask)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_dpo_reference_free_matches_numpy(masked):
    (pc, pr, _, _), mask = pair_inputs(1)
    mask = mask if masked else None
    expected = np_dpo(f64(pc) - f64(pr), 0.2)
    assert_reductions(lambda **o: losses.dpo(pc, pr, None, None, beta=0.2, **o), expected, mask)


def test_dpo_reference_free_equals_zero_reference():
    (pc, pr, _, _), _ = pair_inputs(2)
    zeros = np.zeros_like(pc)
    np.testing.assert_allclose(
        losses.dpo(pc, pr, None, None, reduce_fn=None),
        losses.dpo(pc, pr, zeros, zeros, reduce_fn=None),
        **TOL,
    )


def test_dpo_one_reference_missing_raises():
    (pc, pr, rc, _), _ = pair_inputs(3)
    with pytest.raises(ValueError, match="both"):
        losses.dpo(pc, pr, rc, None)


def test_dpo_per_pair_beta_matches_numpy():
    (pc, pr, rc, rr), mask = pair_inputs(4)
    beta = np.random.default_rng(5).uniform(0.05, 1.0, SHAPE).astype(np.float32)
    expected = np_dpo(np_margin(pc, pr, rc, rr), f64(beta))
    assert_reductions(lambda **o: losses.dpo(pc, pr, rc, rr, beta=beta, **o), expected, mask)


def test_dpo_gradient_matches_closed_form():
    # dL/d logπ(y_w) = -β σ(-β h) ; dL/d logπ(y_l) = +β σ(-β h); reference grads are 0.
    (pc, pr, rc, rr), _ = pair_inputs(6)
    beta = 0.3
    h = np_margin(pc, pr, rc, rr)
    grads = jax.grad(
        lambda *a: jnp.sum(losses.dpo(*a, beta=beta, reduce_fn=None)), argnums=(0, 1, 2, 3)
    )(pc, pr, rc, rr)
    np.testing.assert_allclose(grads[0], -beta * expit(-beta * h), **TOL)
    np.testing.assert_allclose(grads[1], beta * expit(-beta * h), **TOL)
    assert np.all(np.asarray(grads[2]) == 0) and np.all(np.asarray(grads[3]) == 0)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta, eps", [(0.1, 0.0), (0.1, 0.1), (0.5, 0.3)])
def test_robust_dpo_matches_numpy(masked, beta, eps):
    (pc, pr, rc, rr), mask = pair_inputs(7)
    mask = mask if masked else None
    expected = np_robust_dpo(np_margin(pc, pr, rc, rr), beta, eps)
    call = lambda **o: losses.robust_dpo(pc, pr, rc, rr, beta=beta, label_smoothing=eps, **o)
    assert_reductions(call, expected, mask)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_ipo_matches_numpy(masked, beta):
    (pc, pr, rc, rr), mask = pair_inputs(8)
    mask = mask if masked else None
    expected = np_ipo(np_margin(pc, pr, rc, rr), beta)
    assert_reductions(lambda **o: losses.ipo(pc, pr, rc, rr, beta=beta, **o), expected, mask)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta", [0.1, 0.5])
@pytest.mark.parametrize("reference_free", [False, True], ids=["ref", "ref_free"])
def test_hinge_matches_numpy(masked, beta, reference_free):
    (pc, pr, rc, rr), mask = pair_inputs(9)
    if reference_free:
        rc = rr = None
    mask = mask if masked else None
    expected = np_hinge(np_margin(pc, pr, rc, rr), beta)
    assert 0 < np.mean(expected == 0) < 1  # both sides of the hinge are exercised
    assert_reductions(lambda **o: losses.hinge(pc, pr, rc, rr, beta=beta, **o), expected, mask)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_soft_preference_matches_numpy(masked, beta):
    (pc, pr, rc, rr), mask = pair_inputs(10)
    rng = np.random.default_rng(11)
    p = rng.random(SHAPE).astype(np.float32)
    p.reshape(-1)[:3] = [0.0, 0.5, 1.0]
    mask = mask if masked else None
    expected = np_soft_preference(np_margin(pc, pr, rc, rr), beta, f64(p))
    call = lambda **o: losses.soft_preference(pc, pr, rc, rr, p, beta=beta, **o)
    assert_reductions(call, expected, mask)


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_soft_preference_rejects_out_of_range_strength(p):
    (pc, pr, rc, rr), _ = pair_inputs(12)
    with pytest.raises(ValueError, match="preference_strength"):
        losses.soft_preference(pc, pr, rc, rr, np.full(SHAPE, p, np.float32))


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta, gamma, eps", [(2.0, 1.0, 0.0), (2.5, 0.25, 0.0), (10.0, 3.0, 0.1)])
def test_simpo_matches_numpy(masked, beta, gamma, eps):
    rng = np.random.default_rng(13)
    aw, al = avg_logps(rng, SHAPE), avg_logps(rng, SHAPE)
    mask = random_mask(rng, SHAPE) if masked else None
    expected = np_simpo(aw, al, beta, gamma, eps)
    call = lambda **o: losses.simpo(aw, al, beta=beta, gamma=gamma, label_smoothing=eps, **o)
    assert_reductions(call, expected, mask)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_orpo_matches_numpy(masked, beta):
    rng = np.random.default_rng(14)
    aw, al = avg_logps(rng, SHAPE), avg_logps(rng, SHAPE)
    mask = random_mask(rng, SHAPE) if masked else None
    assert_reductions(lambda **o: losses.orpo(aw, al, beta=beta, **o), np_orpo(aw, al, beta), mask)


def test_log_odds_matches_numpy():
    a = np.array([-20.0, -3.0, -1.0, -0.1, -1e-3, -1e-5], np.float32)
    np.testing.assert_allclose(losses.log_odds(jnp.asarray(a)), np_log_odds(a), rtol=1e-4)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize(
    "margin_kind, smoothing_kind",
    [
        ("zero", "zero"),
        ("scalar", "zero"),
        ("array", "zero"),
        ("zero", "scalar"),
        ("array", "array"),
    ],
)
def test_bradley_terry_matches_numpy(masked, margin_kind, smoothing_kind):
    rng = np.random.default_rng(15)
    rc = (2.0 * rng.standard_normal(SHAPE)).astype(np.float32)
    rr = (2.0 * rng.standard_normal(SHAPE)).astype(np.float32)
    margin = {
        "zero": 0.0,
        "scalar": 2.0 / 3.0,
        "array": rng.choice([0.0, 1 / 3, 2 / 3, 1.0], SHAPE).astype(np.float32),
    }[margin_kind]
    alpha = {
        "zero": 0.0,
        "scalar": 0.1,
        "array": rng.uniform(0.0, 0.3, SHAPE).astype(np.float32),
    }[smoothing_kind]
    mask = random_mask(rng, SHAPE) if masked else None
    expected = np_bradley_terry(rc, rr, f64(margin), f64(alpha))
    call = lambda **o: losses.bradley_terry(rc, rr, margin=margin, label_smoothing=alpha, **o)
    assert_reductions(call, expected, mask)


@pytest.mark.parametrize("alpha", [1.5, -0.1])
def test_bradley_terry_rejects_out_of_range_smoothing(alpha):
    r = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.bradley_terry(r, r, label_smoothing=alpha)
    per_pair = np.array([0.1, alpha, 0.2], np.float32)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.bradley_terry(r, r, label_smoothing=per_pair)
    # An invalid value in a masked pair is never used, so it is not an error.
    value = losses.bradley_terry(
        r, r, label_smoothing=per_pair, where=np.array([True, False, True])
    )
    np.testing.assert_allclose(value, np.log(2.0), **TOL)


def test_bradley_terry_margin_is_constant():
    rng = np.random.default_rng(16)
    rc, rr, m = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    g_rc, g_m = jax.grad(
        lambda a, mm: losses.bradley_terry(a, rr, margin=mm, reduce_fn=jnp.sum), argnums=(0, 1)
    )(rc, m)
    # dL/dr_c = -σ(r_r - r_c + m), the "wrongness probability".
    np.testing.assert_allclose(g_rc, -expit(f64(rr) - f64(rc) + f64(m)), **TOL)
    assert np.all(np.asarray(g_m) == 0)


@pytest.mark.parametrize(
    "fn, extra",
    [
        (losses.dpo, ()),
        (losses.robust_dpo, ()),
        (losses.ipo, ()),
        (losses.hinge, ()),
        (losses.soft_preference, (np.full((4,), 0.8, np.float32),)),
    ],
    ids=["dpo", "robust_dpo", "ipo", "hinge", "soft_preference"],
)
def test_reference_logps_get_no_gradient(fn, extra):
    rng = np.random.default_rng(17)
    pc, pr, rc, rr = (logps(rng, (4,), scale=3.0) for _ in range(4))
    grads = jax.grad(lambda *a: fn(*a, *extra, beta=0.5), argnums=(0, 1, 2, 3))(pc, pr, rc, rr)
    assert np.any(np.asarray(grads[0]) != 0)
    assert np.all(np.asarray(grads[2]) == 0)
    assert np.all(np.asarray(grads[3]) == 0)


# --------------------------------------------------------------------------------------------
# Fixed points and identities
# --------------------------------------------------------------------------------------------


def per_pair_grad(fn, h, **kwargs):
    """d(per-pair loss)/dh for a reference-free objective, with h = chosen - rejected."""
    h = jnp.asarray(h, jnp.float32)
    zeros = jnp.zeros_like(h)
    return jax.grad(lambda x: jnp.sum(fn(x, zeros, None, None, reduce_fn=None, **kwargs)))(h)


@pytest.mark.parametrize("beta, eps", [(0.1, 0.2), (0.5, 0.1), (1.0, 0.3)])
def test_cdpo_optimum(beta, eps):
    h_star = np.log((1 - eps) / eps) / beta
    h = np.array([h_star - 5.0, h_star - 0.5, h_star, h_star + 0.5, h_star + 5.0])
    g = np.asarray(per_pair_grad(losses.dpo, h, beta=beta, label_smoothing=eps))
    # dL/dh = β (σ(βh) - (1 - ε)): negative below h*, zero at h*, positive above.
    np.testing.assert_allclose(g, beta * (expit(beta * h) - (1 - eps)), atol=1e-6)
    assert abs(g[2]) < 1e-6
    assert g[0] < 0 and g[1] < 0
    assert g[3] > 0 and g[4] > 0
    # h* minimises the per-pair loss.
    values = losses.dpo(
        jnp.asarray(h, jnp.float32),
        jnp.zeros(5),
        None,
        None,
        beta=beta,
        label_smoothing=eps,
        reduce_fn=None,
    )
    assert np.argmin(np.asarray(values)) == 2


@pytest.mark.parametrize("beta", [0.1, 0.25, 2.0])
def test_ipo_target(beta):
    target = 1.0 / (2.0 * beta)
    h = np.array([target - 1.0, target, target + 1.0])
    values = losses.ipo(
        jnp.asarray(h, jnp.float32), jnp.zeros(3), None, None, beta=beta, reduce_fn=None
    )
    np.testing.assert_allclose(values, [1.0, 0.0, 1.0], atol=1e-5)
    assert abs(float(values[1])) < 1e-10
    g = np.asarray(per_pair_grad(losses.ipo, h, beta=beta))
    # dL/dh = 2 (h - 1/(2β)): the pull towards the target is two-sided.
    np.testing.assert_allclose(g, [-2.0, 0.0, 2.0], atol=1e-5)
    assert abs(g[1]) < 1e-6


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.2, 0.35, 0.45])
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_robust_dpo_is_unbiased(eps, beta):
    # E_flip[L_eps(noisy label)] = (1-ε) L_eps(h) + ε L_eps(-h) equals the clean DPO loss.
    # A flipped label swaps chosen and rejected, which negates h. Exact enumeration in float64.
    rng = np.random.default_rng(18)
    pc, pr, rc, rr = (-30.0 * rng.random(8) for _ in range(4))
    with jax.enable_x64(True):
        kw = {"beta": beta, "label_smoothing": eps, "reduce_fn": None}
        clean_label = losses.robust_dpo(pc, pr, rc, rr, **kw)
        flipped_label = losses.robust_dpo(pr, pc, rr, rc, **kw)
        expectation = np.asarray((1 - eps) * clean_label + eps * flipped_label)
        clean_dpo = np.asarray(losses.dpo(pc, pr, rc, rr, beta=beta, reduce_fn=None))
    assert expectation.dtype == np.float64
    np.testing.assert_allclose(expectation, clean_dpo, rtol=0, atol=1e-6)
    np.testing.assert_allclose(clean_dpo, np_dpo(np_margin(pc, pr, rc, rr), beta), atol=1e-9)


def test_robust_dpo_gradient_never_vanishes():
    beta, eps = 0.5, 0.2
    h = np.array([-10.0, 0.0, 10.0, 200.0])
    g = np.asarray(per_pair_grad(losses.robust_dpo, h, beta=beta, label_smoothing=eps))
    expected = -beta * ((1 - eps) * expit(-beta * h) + eps * expit(beta * h)) / (1 - 2 * eps)
    np.testing.assert_allclose(g, expected, rtol=1e-5)
    assert np.all(g < 0)
    np.testing.assert_allclose(g[-1], -beta * eps / (1 - 2 * eps), rtol=1e-5)


def test_robust_dpo_without_noise_is_dpo():
    (pc, pr, rc, rr), mask = pair_inputs(19)
    np.testing.assert_allclose(
        losses.robust_dpo(pc, pr, rc, rr, label_smoothing=0.0, where=mask, reduce_fn=None),
        losses.dpo(pc, pr, rc, rr, where=mask, reduce_fn=None),
        **TOL,
    )


@pytest.mark.parametrize("eps", [0.5, 0.7, -0.1, 1.0])
def test_robust_dpo_rejects_invalid_flip_rate(eps):
    (pc, pr, rc, rr), _ = pair_inputs(20)
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0\.0, 0\.5\)") as info:
        losses.robust_dpo(pc, pr, rc, rr, label_smoothing=eps)
    assert str(eps) in str(info.value)


@pytest.mark.parametrize("eps", [1.1, -0.2])
def test_dpo_rejects_invalid_label_smoothing(eps):
    (pc, pr, rc, rr), _ = pair_inputs(21)
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.dpo(pc, pr, rc, rr, label_smoothing=eps)


def test_hinge_has_zero_gradient_once_margin_is_met():
    beta = 0.5  # margin on h is 1/β = 2
    h = np.array([-3.0, 0.0, 1.9, 2.1, 10.0])
    values = losses.hinge(
        jnp.asarray(h, jnp.float32), jnp.zeros(5), None, None, beta=beta, reduce_fn=None
    )
    np.testing.assert_allclose(values, np.maximum(0.0, 1.0 - beta * h), atol=1e-6)
    g = np.asarray(per_pair_grad(losses.hinge, h, beta=beta))
    np.testing.assert_array_equal(g, [-beta, -beta, -beta, 0.0, 0.0])


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_soft_preference_certain_label_is_dpo(beta):
    (pc, pr, rc, rr), mask = pair_inputs(22)
    kw = {"beta": beta, "where": mask, "reduce_fn": None}
    np.testing.assert_allclose(
        losses.soft_preference(pc, pr, rc, rr, np.ones(SHAPE, np.float32), **kw),
        losses.dpo(pc, pr, rc, rr, **kw),
        **TOL,
    )


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_soft_preference_smoothed_label_is_cdpo(eps):
    (pc, pr, rc, rr), mask = pair_inputs(23)
    kw = {"beta": 0.2, "where": mask, "reduce_fn": None}
    p = np.full(SHAPE, 1.0 - eps, np.float32)
    np.testing.assert_allclose(
        losses.soft_preference(pc, pr, rc, rr, p, **kw),
        losses.dpo(pc, pr, rc, rr, label_smoothing=np.float32(eps), **kw),
        **TOL,
    )


def test_soft_preference_optimum():
    # σ(β h*) = p: the per-pair gradient vanishes at h* = logit(p)/β.
    beta = 0.5
    p = np.array([0.2, 0.5, 0.9], np.float32)
    h_star = np.log(f64(p) / (1 - f64(p))) / beta
    zeros = jnp.zeros(3)
    g = jax.grad(
        lambda x: losses.soft_preference(x, zeros, None, None, p, beta=beta, reduce_fn=jnp.sum)
    )(jnp.asarray(h_star, jnp.float32))
    np.testing.assert_allclose(g, 0.0, atol=1e-6)


def test_simpo_equals_sigmoid_form():
    # -log σ(β(ā_w - ā_l) - γ), with γ = β · gamma_beta_ratio as in the official code.
    rng = np.random.default_rng(24)
    aw, al = avg_logps(rng, (10,)), avg_logps(rng, (10,))
    beta, ratio = 2.5, 0.55
    expected = -np.log(expit(beta * (f64(aw) - f64(al) - ratio)))
    np.testing.assert_allclose(
        losses.simpo(aw, al, beta=beta, gamma=beta * ratio, reduce_fn=None), expected, **TOL
    )


def test_simpo_is_reference_free_dpo_with_margin():
    # With γ = 0 and no smoothing, SimPO on averaged log-probs is reference-free DPO.
    rng = np.random.default_rng(25)
    aw, al = avg_logps(rng, (10,)), avg_logps(rng, (10,))
    np.testing.assert_allclose(
        losses.simpo(aw, al, beta=2.0, gamma=0.0, reduce_fn=None),
        losses.dpo(aw, al, None, None, beta=2.0, reduce_fn=None),
        **TOL,
    )


@pytest.mark.parametrize("value", [0.0, 1e-7, 0.5, 3.0, -1e4])
def test_orpo_finite_at_clamp_and_extremes(value):
    aw = np.array([value, -1.0, value], np.float32)
    al = np.array([-1.0, value, value], np.float32)
    beta = 1.0
    per = losses.orpo(aw, al, beta=beta, reduce_fn=None)
    assert np.all(np.isfinite(per))
    np.testing.assert_allclose(per, np_orpo(aw, al, beta), rtol=1e-4, atol=1e-4)
    g_w, g_l = jax.grad(lambda a, b: losses.orpo(a, b, beta=beta), argnums=(0, 1))(aw, al)
    assert np.all(np.isfinite(g_w)) and np.all(np.isfinite(g_l))


def test_orpo_clamp_removes_odds_gradient():
    # Above the clamp only the NLL term (-ā_w) carries gradient: d/dā_w = -1 (per pair).
    aw = np.array([0.0, 0.3], np.float32)
    al = np.array([-1.0, -2.0], np.float32)
    g = jax.grad(lambda a: losses.orpo(a, al, beta=1.0, reduce_fn=jnp.sum))(aw)
    np.testing.assert_allclose(g, [-1.0, -1.0], atol=1e-6)


# --------------------------------------------------------------------------------------------
# Property matrix (jaxpref.testing)
# --------------------------------------------------------------------------------------------


def _case_logps(rng, batch_shape, scale):
    return (-scale * rng.random(batch_shape) - 0.01).astype(np.float32)


def _four_logps(rng, batch_shape, scale):
    return tuple(_case_logps(rng, batch_shape, scale) for _ in range(4))


def _two_logps(rng, batch_shape, scale):
    return tuple(_case_logps(rng, batch_shape, scale) for _ in range(2))


def _soft_args(rng, batch_shape, scale):
    p = rng.random(batch_shape).astype(np.float32)  # in [0, 1] whatever the scale
    return (*_four_logps(rng, batch_shape, scale), p)


def _reward_args(rng, batch_shape, scale):
    return tuple((scale * rng.standard_normal(batch_shape)).astype(np.float32) for _ in range(2))


def _reward_margin_args(rng, batch_shape, scale):
    rc, rr = _reward_args(rng, batch_shape, scale)
    margin = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], batch_shape).astype(np.float32)
    alpha = rng.uniform(0.0, 0.3, batch_shape).astype(np.float32)
    return rc, rr, margin, alpha


def dpo_reference_free(pc, pr, **kwargs):
    return losses.dpo(pc, pr, None, None, **kwargs)


def bradley_terry_per_pair(rc, rr, margin, alpha, **kwargs):
    return losses.bradley_terry(rc, rr, margin=margin, label_smoothing=alpha, **kwargs)


PAIR = (0, 1)
CASES = [
    testing.ObjectiveCase("dpo", losses.dpo, _four_logps, {"beta": 0.5}, PAIR),
    testing.ObjectiveCase(
        "cdpo", losses.dpo, _four_logps, {"beta": 0.5, "label_smoothing": 0.2}, PAIR
    ),
    testing.ObjectiveCase("dpo_reference_free", dpo_reference_free, _two_logps, {}, PAIR),
    testing.ObjectiveCase(
        "robust_dpo", losses.robust_dpo, _four_logps, {"beta": 0.5, "label_smoothing": 0.2}, PAIR
    ),
    testing.ObjectiveCase("ipo", losses.ipo, _four_logps, {"beta": 0.5}, PAIR),
    testing.ObjectiveCase("hinge", losses.hinge, _four_logps, {"beta": 0.5}, PAIR),
    testing.ObjectiveCase(
        "soft_preference", losses.soft_preference, _soft_args, {"beta": 0.5}, PAIR
    ),
    testing.ObjectiveCase(
        "simpo", losses.simpo, _two_logps, {"beta": 2.0, "gamma": 0.5, "label_smoothing": 0.1}, PAIR
    ),
    testing.ObjectiveCase("orpo", losses.orpo, _two_logps, {"beta": 1.0}, PAIR),
    testing.ObjectiveCase("bradley_terry", losses.bradley_terry, _reward_args, {}, PAIR),
    testing.ObjectiveCase(
        "bradley_terry_scalar_margin",
        losses.bradley_terry,
        _reward_args,
        {"margin": 1.0, "label_smoothing": 0.05},
        PAIR,
    ),
    testing.ObjectiveCase(
        "bradley_terry_per_pair", bradley_terry_per_pair, _reward_margin_args, {}, PAIR
    ),
]


@pytest.mark.parametrize("check", list(testing.CHECKS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_property(case, check):
    testing.CHECKS[check](case)


@contextlib.contextmanager
def count_backend_compiles():
    """Collects one entry per XLA backend compilation inside the block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_no_recompilation_on_second_eager_call(case):
    # testing.check_no_retrace counts traces of a jitted wrapper; this checks the eager path:
    # new values of the same shapes must reuse every compiled kernel (no fresh jit closures).
    mask = np.array([True, False, True, True, False])

    def calls(seed):
        args = case.make_args(np.random.default_rng(seed), (5,), case.scale)
        jax.block_until_ready(case(*args))
        jax.block_until_ready(case(*args, where=mask, reduce_fn=None))
        grad = jax.grad(lambda pc, pr: jnp.sum(case(pc, pr, *args[2:], where=mask)), argnums=(0, 1))
        jax.block_until_ready(grad(*args[:2]))

    calls(0)
    with count_backend_compiles() as compiles:
        calls(1)
        calls(2)
    assert not compiles


def test_compile_counter_sees_compilations():
    with count_backend_compiles() as compiles:
        jax.jit(lambda x: x * 3.0 + 1.0)(jnp.ones(7))
    assert compiles


def test_property_matrix_covers_every_check():
    assert set(testing.CHECKS) == {
        "mask_equals_slice",
        "jit",
        "batch_axes",
        "gradients",
        "extremes",
        "fully_masked",
        "bfloat16",
        "no_retrace",
    }


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

BUILTIN = {
    "dpo": losses.dpo,
    "robust_dpo": losses.robust_dpo,
    "ipo": losses.ipo,
    "hinge": losses.hinge,
    "soft_preference": losses.soft_preference,
    "simpo": losses.simpo,
    "orpo": losses.orpo,
    "bradley_terry": losses.bradley_terry,
    "kto": losses.kto,
}


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that is restored after the test."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_get_returns_registered_function(name):
    assert losses.get(name) is BUILTIN[name]
    assert losses.spec(name).fn is BUILTIN[name]
    assert losses.spec(name).name == name


def test_get_dpo_is_dpo():
    assert losses.get("dpo") is losses.dpo


def test_unknown_name_lists_known_names():
    with pytest.raises(KeyError) as info:
        losses.get("not_an_objective")
    message = str(info.value)
    assert "not_an_objective" in message
    for name in losses.available():
        assert name in message


def test_available_is_sorted_and_complete():
    names = losses.available()
    assert list(names) == sorted(names)
    assert set(BUILTIN) <= set(names)
    pairwise = losses.available("pairwise")
    assert list(pairwise) == sorted(pairwise)
    assert {"dpo", "robust_dpo", "ipo", "hinge", "soft_preference", "simpo", "orpo"} <= set(
        pairwise
    )
    assert "kto" not in pairwise and "bradley_terry" not in pairwise
    assert "bradley_terry" in losses.available("reward")
    assert "kto" in losses.available("unpaired")


def test_spec_metadata():
    assert losses.spec("simpo").average_logps is True
    assert losses.spec("orpo").average_logps is True
    assert losses.spec("dpo").average_logps is False
    assert losses.spec("dpo").needs_reference is True
    assert losses.spec("simpo").needs_reference is False
    assert losses.spec("bradley_terry").family == "reward"


def test_register_taken_name_needs_overwrite(scratch_registry):
    def other(*args, **kwargs):
        return 0.0

    with pytest.raises(ValueError, match="already registered"):
        losses.register("dpo", other, family="pairwise")
    assert losses.get("dpo") is losses.dpo
    assert losses.register("dpo", other, family="pairwise", overwrite=True) is other
    assert losses.get("dpo") is other


def test_register_new_name(scratch_registry):
    def my_loss(*args, **kwargs):
        return 0.0

    assert "my_test_loss" not in losses.available()
    losses.register("my_test_loss", my_loss, family="listwise", average_logps=True)
    assert losses.get("my_test_loss") is my_loss
    assert "my_test_loss" in losses.available()
    assert "my_test_loss" in losses.available("listwise")
    assert losses.spec("my_test_loss").average_logps is True
    with pytest.raises(ValueError, match="family"):
        losses.register("my_other_loss", my_loss, family="no_such_family")


def test_registry_restored_after_scratch_tests():
    # Runs after the scratch tests in file order: nothing they registered leaks.
    assert "my_test_loss" not in losses.available()
    assert losses.get("dpo") is losses.dpo
