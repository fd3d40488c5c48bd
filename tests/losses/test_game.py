"""Game-theoretic objectives (GPM, online IPO, Nash-MD, EGPO, SPPO, GPO) vs NumPy, plus properties.

Expected values are independent NumPy re-derivations of the formulas (FORMULAS.md part D); the
tabular ties between these losses and the exact game updates live in ``tests/test_games.py``.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxpref import losses, testing
from jaxpref.losses import pairwise
from jaxpref.losses.game import (
    egpo,
    geometric_mixture,
    nash_md,
    nash_md_pg,
    online_ipo,
    online_ipo_omd,
    preference_regression,
)
from jaxpref.losses.game_updates import extragradient
from jaxpref.losses.general_preference import general_preference_score, gpm
from jaxpref.losses.self_play import empirical_win_rates, gpo, sppo
from tests.losses.cases import logps, normal

RNG = np.random.default_rng(0)


def np_softplus(x):
    return np.logaddexp(0.0, x)


def np_reduce(per, mask):
    """(masked mean, masked per-example values) as reduce_losses defines them."""
    per = np.where(mask, per, 0.0)
    return per.sum() / max(mask.sum(), 1), per


# --------------------------------------------------------------------- GPM score and loss


def np_skew_operator(k, weights):
    """The released code's R: R[2l, 2l+1] = -w_l, R[2l+1, 2l] = w_l (a dense 2k x 2k matrix)."""
    r = np.zeros((2 * k, 2 * k))
    for block in range(k):
        r[2 * block, 2 * block + 1] = -weights[block]
        r[2 * block + 1, 2 * block] = weights[block]
    return r


def np_gpm_score(a, b, weights=None):
    """s = a @ R.T @ b, example by example, with a dense block-diagonal R."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    k = a.shape[-1] // 2
    out = np.empty(a.shape[:-1])
    for idx in np.ndindex(*a.shape[:-1]):
        w = np.ones(k) if weights is None else np.asarray(weights, np.float64)[idx]
        out[idx] = a[idx] @ np_skew_operator(k, w).T @ b[idx]
    return out


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_gpm_score_matches_numpy(k, weighted):
    a, b = normal(RNG, (4, 5, 2 * k), 1.0), normal(RNG, (4, 5, 2 * k), 1.0)
    w = (RNG.random((4, 5, k)) * k).astype(np.float32) if weighted else None
    got = general_preference_score(a, b, prompt_weights=w)
    np.testing.assert_allclose(got, np_gpm_score(a, b, w), rtol=1e-5, atol=1e-5)


def test_gpm_score_two_dimensional_convention():
    # 2-D case of the released GeneralPreferenceLoss: s = a[0] * b[1] - a[1] * b[0].
    a, b = normal(RNG, (10, 2), 1.0), normal(RNG, (10, 2), 1.0)
    expected = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    np.testing.assert_allclose(general_preference_score(a, b), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_gpm_score_is_exactly_skew_symmetric(jit):
    score = jax.jit(general_preference_score) if jit else general_preference_score
    a, b = normal(RNG, (257, 8), 3.0), normal(RNG, (257, 8), 3.0)
    w = RNG.random((257, 4)).astype(np.float32) * 4
    for weights in (None, w):
        ab = np.asarray(score(a, b, prompt_weights=weights))
        ba = np.asarray(score(b, a, prompt_weights=weights))
        np.testing.assert_array_equal(ab, -ba)  # bit for bit
        np.testing.assert_array_equal(np.asarray(score(a, a, prompt_weights=weights)), 0.0)


def test_gpm_score_table_by_broadcasting():
    emb = normal(RNG, (2, 5, 4), 1.0)
    table = np.asarray(general_preference_score(emb[:, :, None, :], emb[:, None, :, :]))
    assert table.shape == (2, 5, 5)
    np.testing.assert_array_equal(table, -np.swapaxes(table, -1, -2))
    np.testing.assert_allclose(table[1, 2, 3], np_gpm_score(emb[1, 2], emb[1, 3]), rtol=1e-5)


def test_gpm_score_rejects_odd_or_mismatched_dims():
    with pytest.raises(ValueError, match=r"\[..., 2k\]"):
        general_preference_score(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="same last axis"):
        general_preference_score(jnp.zeros((2, 4)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="prompt_weights"):
        general_preference_score(jnp.zeros((2, 4)), jnp.zeros((2, 4)), prompt_weights=jnp.ones(3))


@pytest.mark.parametrize("normalize", [False, True])
def test_gpm_loss_matches_numpy(normalize):
    a, b = normal(RNG, (12, 4), 2.0), normal(RNG, (12, 4), 2.0)
    a[3] = 0.0  # a zero embedding stays finite when normalised
    w = RNG.random((12, 2)).astype(np.float32) * 2
    tau, m = 0.5, normal(RNG, (12,), 0.3)
    mask = RNG.random(12) < 0.7
    na, nb = a.astype(np.float64), b.astype(np.float64)
    if normalize:
        na = na / np.maximum(np.linalg.norm(na, axis=-1, keepdims=True), 1e-12)
        nb = nb / np.maximum(np.linalg.norm(nb, axis=-1, keepdims=True), 1e-12)
    expected = np_softplus(-(np_gpm_score(na, nb, w) - m) / tau)
    mean, per = np_reduce(expected, mask)
    kwargs = dict(prompt_weights=w, temperature=tau, margin=m, normalize=normalize, where=mask)
    np.testing.assert_allclose(gpm(a, b, reduce_fn=None, **kwargs), per, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpm(a, b, **kwargs), mean, rtol=1e-5)
    grads = jax.grad(gpm, argnums=(0, 1))(a, b, normalize=normalize, where=mask)
    assert all(np.all(np.isfinite(g)) for g in grads)


# --------------------------------------------------------------------- cyclic preferences

CYCLE_WINNERS, CYCLE_LOSERS = np.array([0, 1, 2]), np.array([1, 2, 0])  # A>B, B>C, C>A


def fit(loss, params, *, steps, learning_rate=0.05):
    """Adam on ``loss`` from ``params``: a jitted ``lax.scan`` of ``steps`` updates."""
    optimizer = optax.adam(learning_rate)

    def step(carry, _):
        params, state = carry
        updates, state = optimizer.update(jax.grad(loss)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.jit(
        lambda p: jax.lax.scan(step, (p, optimizer.init(p)), None, length=steps)
    )(params)
    return params


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_gpm_fits_a_three_cycle_from_random_init(seed):
    def loss(e):
        return gpm(e[CYCLE_WINNERS], e[CYCLE_LOSERS])

    fitted = fit(loss, 0.1 * jax.random.normal(jax.random.key(seed), (3, 2)), steps=300)
    scores = np.asarray(general_preference_score(fitted[CYCLE_WINNERS], fitted[CYCLE_LOSERS]))
    assert np.mean(scores > 0) == 1.0  # all three comparisons of the cycle
    assert float(loss(fitted)) < 0.1


def bt_accuracy(rewards):
    rewards = np.asarray(rewards)
    return np.mean(rewards[..., CYCLE_WINNERS] > rewards[..., CYCLE_LOSERS], axis=-1)


def test_no_scalar_reward_fits_a_three_cycle():
    # Accuracy depends only on the (weak) order of the three rewards: enumerate all of them.
    orders = np.array(list(itertools.product(range(3), repeat=3)), float)
    assert bt_accuracy(orders).max() == pytest.approx(2 / 3)
    # And random real-valued rewards never do better.
    assert bt_accuracy(RNG.normal(size=(20000, 3))).max() == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_bradley_terry_fit_to_a_three_cycle_is_at_most_two_thirds(seed):
    def loss(r):
        return losses.bradley_terry(r[CYCLE_WINNERS], r[CYCLE_LOSERS])

    rewards = fit(loss, jax.random.normal(jax.random.key(seed), (3,)), steps=300)
    assert bt_accuracy(rewards) <= 2 / 3
    assert float(loss(rewards)) > 0.6  # the BT optimum on a balanced cycle is log 2


# --------------------------------------------------------------------- Nash-learning losses


def pair_inputs(shape, rng=RNG):
    pc, pr, rc, rr = (logps(rng, shape, 2.0) for _ in range(4))
    w1, w2 = rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32)
    return pc, pr, rc, rr, w1, w2


def np_h(pc, pr, rc, rr):
    pc, pr, rc, rr = (np.asarray(x, np.float64) for x in (pc, pr, rc, rr))
    return (pc - rc) - (pr - rr)


@pytest.mark.parametrize("fn", [online_ipo_omd, nash_md, egpo], ids=lambda f: f.__name__)
def test_win_rate_regressions_match_numpy(fn):
    pc, pr, rc, rr, w1, w2 = pair_inputs((16,))
    mask = RNG.random(16) < 0.7
    expected = (np_h(pc, pr, rc, rr) - (w1.astype(float) - w2) / 0.25) ** 2
    mean, per = np_reduce(expected, mask)
    got = fn(pc, pr, rc, rr, w1, w2, beta=0.25, where=mask, reduce_fn=None)
    np.testing.assert_allclose(got, per, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fn(pc, pr, rc, rr, w1, w2, beta=0.25, where=mask), mean, rtol=1e-5)
    np.testing.assert_allclose(
        fn(pc, pr, rc, rr, w1, w2, beta=0.25, reduce_fn=jnp.sum), expected.sum(), rtol=1e-5
    )


def test_online_ipo_matches_numpy_and_is_ipo_for_hard_labels():
    pc, pr, rc, rr, p, _ = pair_inputs((16,))
    expected = (np_h(pc, pr, rc, rr) - (p.astype(float) - 0.5) / 0.2) ** 2
    got = online_ipo(pc, pr, rc, rr, p, beta=0.2, reduce_fn=None)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    ones = np.ones_like(p)
    np.testing.assert_allclose(
        online_ipo(pc, pr, rc, rr, ones, beta=0.2),
        pairwise.ipo(pc, pr, rc, rr, beta=0.2),
        rtol=1e-6,
    )


def test_preference_regression_reference_free_and_broadcast_target():
    pc, pr = logps(RNG, (3, 4), 1.0), logps(RNG, (3, 4), 1.0)
    target = RNG.random(4).astype(np.float32) - 0.5  # broadcasts over the leading axis
    expected = (pc.astype(float) - pr - target / 0.5) ** 2
    got = preference_regression(pc, pr, None, None, target, beta=0.5, reduce_fn=None)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_nash_md_pg_matches_numpy_value_and_gradient():
    lp, ref = logps(RNG, (10,), 2.0), logps(RNG, (10,), 2.0)
    w = RNG.random(10).astype(np.float32)
    mask = RNG.random(10) < 0.7
    adv = w.astype(float) - 0.3 * (lp.astype(float) - ref)
    mean, per = np_reduce(-w * lp + 0.15 * (lp.astype(float) - ref) ** 2, mask)
    np.testing.assert_allclose(
        nash_md_pg(lp, ref, w, beta=0.3, where=mask, reduce_fn=None), per, rtol=1e-5, atol=1e-6
    )
    grad = jax.grad(lambda x: nash_md_pg(x, ref, w, beta=0.3, where=mask, reduce_fn=jnp.sum))(lp)
    np.testing.assert_allclose(grad, np.where(mask, -adv, 0.0), rtol=1e-5, atol=1e-6)
    assert np.isclose(mean, float(nash_md_pg(lp, ref, w, beta=0.3, where=mask)), rtol=1e-5)


@pytest.mark.parametrize("fn", [sppo, gpo], ids=lambda f: f.__name__)
def test_self_play_losses_match_numpy(fn):
    lp, lp_t = logps(RNG, (6, 2), 2.0), logps(RNG, (6, 2), 2.0)
    value = RNG.random((6, 2)).astype(np.float32)
    mask = RNG.random((6, 2)) < 0.8
    target = value.astype(float) - 0.5 if fn is sppo else value.astype(float)
    expected = (lp.astype(float) - lp_t - target / 0.01) ** 2
    mean, per = np_reduce(expected, mask)
    np.testing.assert_allclose(
        fn(lp, lp_t, value, beta=0.01, where=mask, reduce_fn=None), per, rtol=1e-5, atol=1e-3
    )
    np.testing.assert_allclose(fn(lp, lp_t, value, beta=0.01, where=mask), mean, rtol=1e-5)


def test_sppo_pair_form_is_the_official_half_sum():
    # uclaml/SPPO trainer: ((r_w - (P_w - 1/2)/beta)^2 + (r_l - (P_l - 1/2)/beta)^2) / 2
    lp, lp_t, p = logps(RNG, (5, 2), 1.0), logps(RNG, (5, 2), 1.0), RNG.random((5, 2))
    r = lp.astype(float) - lp_t
    official = ((r[:, 0] - (p[:, 0] - 0.5) / 0.1) ** 2 + (r[:, 1] - (p[:, 1] - 0.5) / 0.1) ** 2) / 2
    np.testing.assert_allclose(sppo(lp, lp_t, p, beta=0.1), official.mean(), rtol=1e-5)


def test_sppo_default_beta_keeps_float32_targets_exact():
    # beta = 1e-3: targets of +-500 nats, computed in float32 even for bfloat16 inputs.
    lp = jnp.asarray([-10.0, -10.0], jnp.bfloat16)
    got = sppo(lp, lp, jnp.asarray([1.0, 0.0]), reduce_fn=None)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, [500.0**2, 500.0**2], rtol=1e-6)


def test_targets_and_opponents_get_no_gradient():
    pc, pr, rc, rr, w1, w2 = pair_inputs((4,))
    grads = jax.grad(egpo, argnums=(2, 3, 4, 5))(pc, pr, rc, rr, w1, w2)
    assert all(np.all(np.asarray(g) == 0) for g in grads)
    grads = jax.grad(sppo, argnums=(1, 2))(pc, rc, w1)
    assert all(np.all(np.asarray(g) == 0) for g in grads)
    grads = jax.grad(nash_md_pg, argnums=(1, 2))(pc, rc, w1)
    assert all(np.all(np.asarray(g) == 0) for g in grads)


def test_empirical_win_rates_match_numpy():
    p = RNG.random((3, 4, 4)).astype(np.float32)
    mask = RNG.random((3, 4)) < 0.7
    mask[2] = False
    expected = np.array(
        [[p[b, i][mask[b]].mean() if mask[b].any() else 0.0 for i in range(4)] for b in range(3)]
    )
    got = empirical_win_rates(p, opponent_where=mask)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(empirical_win_rates(p), p.mean(-1), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[..., K, K\]"):
        empirical_win_rates(jnp.zeros((3, 4)))


def test_gpo_target_from_a_gpm_score_table():
    emb = normal(RNG, (5, 4), 1.0)
    table = general_preference_score(emb[:, None], emb[None, :])
    scores = np.asarray(empirical_win_rates(table))
    a, b = np.broadcast_arrays(emb[:, None], emb[None, :])
    np.testing.assert_allclose(scores, np_gpm_score(a, b).mean(-1), atol=1e-5)
    assert abs(scores.sum()) < 1e-4  # s(pi_t > pi_t) = 0 for the uniform sample distribution


def test_geometric_mixture_matches_numpy():
    a, b = normal(RNG, (3, 5), 1.0), normal(RNG, (3, 5), 1.0)
    pa = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    pb = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    mix = pa**0.7 * pb**0.3
    expected = np.log(mix / mix.sum(-1, keepdims=True))
    np.testing.assert_allclose(geometric_mixture(a, b, mixture=0.3), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mixture"):
        geometric_mixture(a, b, mixture=1.5)


# --------------------------------------------------------------------- extragradient helper


def test_extragradient_with_sgd_is_the_reference_step_undo_step():
    # EGPO simulations: step with g1, step with -g1 (undo), step with g2 = grad at theta_t.
    k, lr = 4, 0.05
    preference = jnp.asarray(RNG.random((k, k)), jnp.float32)
    preference = jnp.triu(preference, 1) + jnp.tril(1.0 - preference.T, -1) + 0.5 * jnp.eye(k)

    def loss(theta, win):
        lp = jax.nn.log_softmax(theta)
        return egpo(lp[:, None], lp[None, :], None, None, win[:, None], win[None, :], beta=0.1)

    def targets(theta):
        return preference @ jax.nn.softmax(theta)

    theta = jnp.asarray(normal(RNG, (k,), 1.0))
    eg = extragradient(loss, optax.sgd(lr))
    state = optax.sgd(lr).init(theta)
    half = eg.lookahead(theta, state, targets(theta))
    new, _, _ = eg.update(theta, state, targets(half))
    g1 = jax.grad(loss)(theta, targets(theta))
    moved = theta - lr * g1
    back = moved + lr * g1
    g2 = jax.grad(loss)(back, targets(moved))
    np.testing.assert_allclose(half, moved, rtol=1e-6)
    np.testing.assert_allclose(new, back - lr * g2, rtol=1e-5, atol=1e-6)


def test_extragradient_lookahead_does_not_advance_optimizer_state():
    eg = extragradient(lambda p, t: jnp.sum((p - t) ** 2), optax.adam(0.1))
    params = jnp.zeros(3)
    state = optax.adam(0.1).init(params)
    eg.lookahead(params, state, jnp.ones(3))
    new, new_state, loss = jax.jit(eg.update)(params, state, jnp.ones(3))
    assert int(new_state[0].count) == 1 and float(loss) == 3.0
    np.testing.assert_allclose(new, 0.1, rtol=1e-5)


# --------------------------------------------------------------------- property matrix


def _pairs_with_win_rates(r, b, s):
    return (*(logps(r, b, s) for _ in range(4)), r.random(b), r.random(b))


def _embeddings(r, b, s):
    return normal(r, (*b, 4), s), normal(r, (*b, 4), s)


CASES = [
    testing.ObjectiveCase("gpm", gpm, _embeddings, grad_argnums=(0, 1)),
    testing.ObjectiveCase(
        "gpm_normalized_weighted",
        lambda a, b, w, **kw: gpm(a, b, prompt_weights=w, **kw),
        lambda r, b, s: (*_embeddings(r, b, s), r.random((*b, 2)) + 0.1),
        kwargs={"normalize": True, "temperature": 0.5, "margin": 0.1},
        grad_argnums=(0, 1, 2),
    ),
    testing.ObjectiveCase(
        "preference_regression",
        preference_regression,
        lambda r, b, s: (*(logps(r, b, s) for _ in range(4)), r.random(b) - 0.5),
        grad_argnums=(0, 1),
    ),
    testing.ObjectiveCase(
        "online_ipo",
        online_ipo,
        lambda r, b, s: (*(logps(r, b, s) for _ in range(4)), r.random(b)),
        grad_argnums=(0, 1),
    ),
    testing.ObjectiveCase("online_ipo_omd", online_ipo_omd, _pairs_with_win_rates, {}, (0, 1)),
    testing.ObjectiveCase("nash_md", nash_md, _pairs_with_win_rates, {"beta": 0.5}, (0, 1)),
    testing.ObjectiveCase(
        "nash_md_pg",
        nash_md_pg,
        lambda r, b, s: (logps(r, b, s), logps(r, b, s), r.random(b)),
        kwargs={"beta": 0.1},
    ),
    testing.ObjectiveCase("egpo", egpo, _pairs_with_win_rates, {"beta": 0.1}, (0, 1)),
    testing.ObjectiveCase(
        "sppo",
        sppo,
        lambda r, b, s: (logps(r, b, s), logps(r, b, s), r.random(b)),
        kwargs={"beta": 0.1},
    ),
    testing.ObjectiveCase(
        "gpo",
        gpo,
        lambda r, b, s: (logps(r, b, s), logps(r, b, s), normal(r, b, 1.0)),
        kwargs={"beta": 0.1},
    ),
]


@pytest.mark.parametrize("check", sorted(testing.CHECKS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_properties(case, check):
    testing.CHECKS[check](case)
