"""Tests of KTO and its reference point (:mod:`jaxpref.losses.unpaired`).

Expected values come from a NumPy/SciPy re-derivation of Ethayarajh et al. (Eq. 8, HALOs
reduction: the mean over desirable and undesirable examples together) and from the property
harness :mod:`jaxpref.testing`.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import expit

from jaxpref import losses, testing

TOL = {"rtol": 1e-5, "atol": 1e-6}


def f64(x):
    return np.asarray(x, np.float64)


def np_kto(lp, ref, desirable, z0, beta, w_d=1.0, w_u=1.0):
    """Per-example KTO losses: λ_D (1 - σ(β(r - z0))) or λ_U (1 - σ(β(z0 - r)))."""
    r = f64(lp) - f64(ref)
    z0 = f64(z0)
    gain = w_d * (1.0 - expit(beta * (r - z0)))
    loss = w_u * (1.0 - expit(beta * (z0 - r)))
    return np.where(desirable, gain, loss)


def np_masked_mean(values, mask):
    values = f64(values)
    return values.mean() if mask is None else values[mask].mean()


def inputs(seed, shape=(12,)):
    rng = np.random.default_rng(seed)
    lp = (-30.0 * rng.random(shape) - 1.0).astype(np.float32)
    ref = (lp + 8.0 * rng.standard_normal(shape)).astype(np.float32)  # r = lp - ref ~ N(0, 8)
    desirable = rng.random(shape) < 0.5
    desirable.reshape(-1)[:2] = [True, False]  # both kinds present
    mask = rng.random(shape) < 0.7
    mask.reshape(-1)[[0, 1, -1]] = [True, True, False]
    return lp, ref, desirable, mask


def assert_kto(lp, ref, desirable, z0, mask, **kwargs):
    beta = kwargs.get("beta", 0.1)
    w_d = kwargs.get("desirable_weight", 1.0)
    w_u = kwargs.get("undesirable_weight", 1.0)
    per_np = np_kto(lp, ref, desirable, z0, beta, w_d, w_u)
    per = losses.kto(lp, ref, desirable, z0, where=mask, reduce_fn=None, **kwargs)
    assert per.dtype == jnp.float32 and per.shape == per_np.shape
    np.testing.assert_allclose(per, per_np if mask is None else np.where(mask, per_np, 0), **TOL)
    mean = losses.kto(lp, ref, desirable, z0, where=mask, **kwargs)
    np.testing.assert_allclose(mean, np_masked_mean(per_np, mask), **TOL)
    total = losses.kto(lp, ref, desirable, z0, where=mask, reduce_fn=jnp.sum, **kwargs)
    np.testing.assert_allclose(
        total, per_np[mask].sum() if mask is not None else per_np.sum(), **TOL
    )


# --------------------------------------------------------------------------------------------
# KTO vs NumPy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("beta, z0", [(0.1, 0.0), (0.1, 2.5), (0.5, 1.0)])
def test_kto_mixed_batch_matches_numpy(masked, beta, z0):
    lp, ref, desirable, mask = inputs(0)
    assert_kto(lp, ref, desirable, np.float32(z0), mask if masked else None, beta=beta)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_kto_weights_match_numpy(masked):
    lp, ref, desirable, mask = inputs(1)
    assert_kto(
        lp,
        ref,
        desirable,
        np.float32(0.7),
        mask if masked else None,
        beta=0.3,
        desirable_weight=1.33,
        undesirable_weight=0.5,
    )


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_kto_all_desirable_batch(masked):
    lp, ref, _, mask = inputs(2)
    desirable = np.ones(lp.shape, bool)
    mask = mask if masked else None
    assert_kto(lp, ref, desirable, np.float32(0.5), mask, beta=0.2, undesirable_weight=7.0)
    # With no undesirable example the undesirable weight plays no role.
    np.testing.assert_allclose(
        losses.kto(lp, ref, desirable, 0.5, beta=0.2, undesirable_weight=7.0, where=mask),
        losses.kto(lp, ref, desirable, 0.5, beta=0.2, undesirable_weight=1.0, where=mask),
        **TOL,
    )


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_kto_no_desirable_batch(masked):
    lp, ref, _, mask = inputs(3)
    desirable = np.zeros(lp.shape, bool)
    mask = mask if masked else None
    assert_kto(lp, ref, desirable, np.float32(0.5), mask, beta=0.2, desirable_weight=3.0)
    value = losses.kto(lp, ref, desirable, 0.5, beta=0.2, desirable_weight=3.0, where=mask)
    assert np.isfinite(value)
    np.testing.assert_allclose(
        value, losses.kto(lp, ref, desirable, 0.5, beta=0.2, where=mask), **TOL
    )


def test_kto_per_example_reference_point_and_batch_rank():
    lp, ref, desirable, mask = inputs(4, shape=(3, 4))
    z0 = np.random.default_rng(5).uniform(0.0, 3.0, (3, 4)).astype(np.float32)
    assert_kto(lp, ref, desirable, z0, mask, beta=0.25)


def test_kto_is_bounded_by_weights():
    lp, ref, desirable, _ = inputs(6)
    per = np.asarray(
        losses.kto(
            lp * 100,
            ref,
            desirable,
            0.0,
            desirable_weight=2.0,
            undesirable_weight=0.5,
            reduce_fn=None,
        )
    )
    assert np.all(per >= 0)
    assert np.all(per[desirable] <= 2.0) and np.all(per[~desirable] <= 0.5)


def test_kto_at_reference_point_is_half_weight():
    # r = z0 gives σ(0) = 1/2 for both kinds.
    lp = np.array([-3.0, -5.0], np.float32)
    ref = lp - 1.5
    per = losses.kto(
        lp,
        ref,
        np.array([True, False]),
        1.5,
        desirable_weight=2.0,
        undesirable_weight=0.5,
        reduce_fn=None,
    )
    np.testing.assert_allclose(per, [1.0, 0.25], **TOL)


def test_kto_gradient_matches_closed_form():
    lp, ref, desirable, _ = inputs(7)
    beta, z0, w_d, w_u = 0.3, 1.2, 1.5, 0.8
    g_lp, g_ref, g_z0 = jax.grad(
        lambda a, b, z: losses.kto(
            a,
            b,
            desirable,
            z,
            beta=beta,
            desirable_weight=w_d,
            undesirable_weight=w_u,
            reduce_fn=jnp.sum,
        ),
        argnums=(0, 1, 2),
    )(lp, ref, np.float32(z0))
    r = f64(lp) - f64(ref)
    s_d = expit(beta * (r - z0))
    s_u = expit(beta * (z0 - r))
    expected = np.where(desirable, -w_d * beta * s_d * (1 - s_d), w_u * beta * s_u * (1 - s_u))
    np.testing.assert_allclose(g_lp, expected, **TOL)
    # Reference log-probs and the reference point are constants.
    assert np.all(np.asarray(g_ref) == 0)
    assert float(g_z0) == 0.0


def test_kto_requires_boolean_labels():
    lp, ref, desirable, _ = inputs(8)
    with pytest.raises(TypeError, match="desirable"):
        losses.kto(lp, ref, desirable.astype(np.int32), 0.0)


# --------------------------------------------------------------------------------------------
# kto_reference_point
# --------------------------------------------------------------------------------------------


def test_reference_point_is_mean_log_ratio_when_positive():
    rng = np.random.default_rng(9)
    pol = (-20.0 * rng.random(10)).astype(np.float32)
    ref = (pol - 2.0 + rng.standard_normal(10)).astype(np.float32)
    expected = np.mean(f64(pol) - f64(ref))
    assert expected > 0
    z0 = losses.kto_reference_point(pol, ref)
    assert z0.shape == ()
    np.testing.assert_allclose(z0, expected, **TOL)


def test_reference_point_is_clamped_at_zero():
    pol = np.array([-5.0, -7.0, -1.0], np.float32)
    ref = np.array([-4.0, -4.0, -2.0], np.float32)  # mean log-ratio = (-1 - 3 + 1)/3 = -1
    assert float(losses.kto_reference_point(pol, ref)) == 0.0


def test_reference_point_masking():
    rng = np.random.default_rng(10)
    pol = (-20.0 * rng.random((3, 4))).astype(np.float32)
    ref = (pol - 1.0 + rng.standard_normal((3, 4))).astype(np.float32)
    mask = rng.random((3, 4)) < 0.6
    mask[0, 0], mask[-1, -1] = True, False
    expected = np.mean((f64(pol) - f64(ref))[mask])
    assert expected > 0
    poisoned = np.where(mask, pol, np.nan).astype(np.float32)
    poisoned[~mask & (np.arange(12).reshape(3, 4) % 2 == 0)] = np.inf
    np.testing.assert_allclose(
        losses.kto_reference_point(poisoned, ref, where=mask), expected, **TOL
    )
    # An empty (masked) KL sequence counts for nothing, however large its log-ratio.
    big = np.where(mask, pol, 1e4).astype(np.float32)
    np.testing.assert_allclose(losses.kto_reference_point(big, ref, where=mask), expected, **TOL)


def test_reference_point_fully_masked_is_zero():
    pol = np.array([3.0, 4.0], np.float32)
    ref = np.zeros(2, np.float32)
    assert float(losses.kto_reference_point(pol, ref, where=np.zeros(2, bool))) == 0.0


def test_reference_point_has_zero_gradient():
    rng = np.random.default_rng(11)
    pol = (-5.0 * rng.random(6)).astype(np.float32)
    ref = (pol - 2.0).astype(np.float32)  # mean log-ratio 2 > 0: not in the clamp
    assert float(losses.kto_reference_point(pol, ref)) > 1.0
    g_pol, g_ref = jax.grad(losses.kto_reference_point, argnums=(0, 1))(pol, ref)
    assert np.all(np.asarray(g_pol) == 0) and np.all(np.asarray(g_ref) == 0)

    # Fed into KTO, z0 adds no gradient path from the KL batch to the policy.
    desirable = np.array([True, False, True, False, True, True])

    def loss(policy, policy_kl):
        z0 = losses.kto_reference_point(policy_kl, ref)
        return losses.kto(policy, ref, desirable, z0, beta=0.5)

    g_policy, g_kl = jax.grad(loss, argnums=(0, 1))(pol, np.roll(pol, 1))
    assert np.any(np.asarray(g_policy) != 0)
    assert np.all(np.asarray(g_kl) == 0)


def test_reference_point_under_jit():
    rng = np.random.default_rng(12)
    pol = (-5.0 * rng.random(6)).astype(np.float32)
    ref = (pol - rng.random(6)).astype(np.float32)
    mask = np.array([True, True, False, True, False, True])
    np.testing.assert_allclose(
        jax.jit(lambda a, b, m: losses.kto_reference_point(a, b, where=m))(pol, ref, mask),
        np.mean((f64(pol) - f64(ref))[mask]),
        **TOL,
    )


# --------------------------------------------------------------------------------------------
# Property matrix
# --------------------------------------------------------------------------------------------


def _kto_args(rng, batch_shape, scale):
    lp = (-scale * rng.random(batch_shape) - 0.01).astype(np.float32)
    ref = (-scale * rng.random(batch_shape) - 0.01).astype(np.float32)
    desirable = rng.random(batch_shape) < 0.5
    z0 = np.float32(0.2 * scale * rng.random())
    return lp, ref, desirable, z0


def _kto_per_example_z0_args(rng, batch_shape, scale):
    lp, ref, desirable, _ = _kto_args(rng, batch_shape, scale)
    return lp, ref, desirable, (0.2 * scale * rng.random(batch_shape)).astype(np.float32)


CASES = [
    testing.ObjectiveCase("kto", losses.kto, _kto_args, {"beta": 0.5}, (0,)),
    testing.ObjectiveCase(
        "kto_weighted",
        losses.kto,
        _kto_args,
        {"beta": 0.5, "desirable_weight": 1.33, "undesirable_weight": 0.7},
        (0,),
    ),
    testing.ObjectiveCase(
        "kto_per_example_z0", losses.kto, _kto_per_example_z0_args, {"beta": 0.5}, (0,)
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
    # New values of the same shapes reuse every compiled kernel on the eager path too.
    mask = np.array([True, False, True, True, False])

    def calls(seed):
        lp, ref, desirable, z0 = case.make_args(np.random.default_rng(seed), (5,), case.scale)
        jax.block_until_ready(case(lp, ref, desirable, z0))
        jax.block_until_ready(case(lp, ref, desirable, z0, where=mask, reduce_fn=None))
        grad = jax.grad(lambda x: case(x, ref, desirable, z0, where=mask))
        jax.block_until_ready(grad(lp))
        jax.block_until_ready(losses.kto_reference_point(lp, ref, where=mask))

    calls(0)
    with count_backend_compiles() as compiles:
        calls(1)
        calls(2)
    assert not compiles
