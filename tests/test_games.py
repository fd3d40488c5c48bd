"""Tabular preference games: exact game math vs brute force, runners, and ties to the losses."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import optimize, special

from jaxpref import games
from jaxpref.losses.game import egpo, geometric_mixture, nash_md, online_ipo, online_ipo_omd
from jaxpref.losses.game_updates import extragradient
from jaxpref.losses.self_play import sppo

RNG = np.random.default_rng(0)
K10_GAME = games.random_game(jax.random.key(0), 10)
UNIFORM10 = jnp.full((10,), 0.1)


def np_random_game(k, rng=RNG):
    u = rng.random((k, k))
    return np.triu(u, 1) + np.tril(1.0 - u.T, -1) + 0.5 * np.eye(k)


def np_dirichlet(k, n=None, rng=RNG):
    return rng.dirichlet(np.ones(k), size=n)


def np_kl(p, q):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return np.sum(special.xlogy(p, p) - special.xlogy(p, q), axis=-1)


def np_value(p1, p2, pref, ref, beta):
    """V(p1, p2) = p1' P p2 - beta KL(p1||ref) + beta KL(p2||ref), rows of p1/p2 broadcast."""
    return (
        np.einsum("...i,ij,...j->...", p1, pref, p2) - beta * np_kl(p1, ref) + beta * np_kl(p2, ref)
    )


def simplex_grid(n):
    """Every point of the 2-simplex with coordinates in multiples of 1/n."""
    pts = [(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)]
    return np.asarray(pts, np.float64) / n


GRID = simplex_grid(300)  # 45,451 points


# --------------------------------------------------------------------- generators


def test_generators_are_preference_matrices():
    p_random = np.asarray(games.random_game(jax.random.key(3), 7))
    p_cyclic = np.asarray(games.cyclic_game(5, strength=0.3))
    p_trans = np.asarray(games.transitive_game(jnp.array([0.0, 2.0, -1.0, 0.5])))
    for p in (p_random, p_cyclic, p_trans):
        np.testing.assert_allclose(p + p.T, 1.0, atol=1e-6)
        np.testing.assert_allclose(np.diag(p), 0.5)
        assert np.all((p >= 0) & (p <= 1))
    assert np.array_equal(np.asarray(games.cyclic_game(3)), [[0.5, 1, 0], [0, 0.5, 1], [1, 0, 0.5]])
    assert np.all(p_trans[1] >= 0.5)  # the highest reward beats everyone: a Condorcet winner
    with pytest.raises(ValueError, match=">= 3"):
        games.cyclic_game(2)


def test_random_games_vmap_over_keys():
    batch = jax.vmap(lambda key: games.random_game(key, 4))(jax.random.split(jax.random.key(1), 5))
    assert batch.shape == (5, 4, 4)
    np.testing.assert_allclose(batch + jnp.swapaxes(batch, -1, -2), 1.0, atol=1e-6)


# --------------------------------------------------------------------- game math vs NumPy


def test_kl_and_game_value_match_numpy():
    k, beta = 6, 0.3
    pref, ref = np_random_game(k), np_dirichlet(k)
    p1, p2 = np_dirichlet(k, 4), np_dirichlet(k, 4)
    p1[0, 2] = 0.0  # 0 log 0 = 0
    p1[0] /= p1[0].sum()
    np.testing.assert_allclose(games.kl_divergence(p1, ref), np_kl(p1, ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        games.game_value(p1, p2, pref, ref, beta=beta),
        np_value(p1, p2, pref, ref, beta),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(games.win_rates(pref, p2), p2 @ pref.T, rtol=1e-5)


@pytest.mark.parametrize("beta", [0.05, 0.3, 1.0])
def test_best_response_closed_form_vs_grid_and_scipy(beta):
    pref, ref, pi = np_random_game(3), np_dirichlet(3), np_dirichlet(3)
    q_star = np.asarray(games.best_response(pi, pref, ref, beta=beta), np.float64)
    np.testing.assert_allclose(q_star.sum(), 1.0, rtol=1e-6)
    exact_max = np_value(q_star, pi, pref, ref, beta)
    # Brute force over a fine simplex grid: no grid point beats the closed form, and the best
    # one is within a grid cell of it.
    grid_values = np_value(GRID, pi, pref, ref, beta)
    assert grid_values.max() <= exact_max + 1e-6
    assert exact_max - grid_values.max() < 1e-3
    assert np.abs(GRID[np.argmax(grid_values)] - q_star).max() < 2.5 / 300 + 0.01 * (beta < 0.1)
    # Numerical maximisation over softmax logits.
    res = optimize.minimize(
        lambda x: -np_value(special.softmax(x), pi, pref, ref, beta), np.zeros(3), method="BFGS"
    )
    np.testing.assert_allclose(special.softmax(res.x), q_star, atol=1e-3)
    np.testing.assert_allclose(-res.fun, exact_max, atol=1e-7)
    # The same q* minimises V(pi, q): the game is symmetric.
    min_values = np_value(pi, GRID, pref, ref, beta)
    assert min_values.min() >= np_value(pi, q_star, pref, ref, beta) - 1e-6


@pytest.mark.parametrize("beta", [0.0, 0.05, 0.3, 1.0])
def test_duality_gap_vs_brute_force(beta):
    for _ in range(3):
        pref, ref, pi = np_random_game(3), np_dirichlet(3), np_dirichlet(3)
        brute = (
            np_value(GRID, pi, pref, ref, beta).max() - np_value(pi, GRID, pref, ref, beta).min()
        )
        gap = float(games.duality_gap(pi, pref, ref, beta=beta))
        assert gap >= brute - 1e-5  # the grid cannot beat the exact best responses
        assert gap - brute < 2e-3
        if beta == 0.0:  # an LP: the optimum is at a vertex, which the grid contains
            np.testing.assert_allclose(gap, brute, atol=1e-6)
            np.testing.assert_allclose(gap, 2 * (pref @ pi).max() - 1, atol=1e-6)


def test_duality_gap_matches_the_direct_closed_form():
    k, beta = 8, 0.2
    pref, ref, pi = np_random_game(k), np_dirichlet(k), np_dirichlet(k, 16)
    a = pi @ pref.T
    lse = special.logsumexp(np.log(ref) + a / beta, axis=-1)
    best = beta * lse + beta * np_kl(pi, ref)  # max_q V(q, pi)
    worst = 1.0 - beta * lse - beta * np_kl(pi, ref)  # min_q V(pi, q)
    np.testing.assert_allclose(games.duality_gap(pi, pref, ref, beta=beta), best - worst, atol=2e-6)


def test_duality_gap_is_nonnegative_and_handles_zero_entries():
    for k, beta in itertools.product((3, 10), (0.0, 0.01, 0.1, 2.0)):
        pref, ref, pi = np_random_game(k), np_dirichlet(k), np_dirichlet(k, 500)
        pi[:50, 0] = 0.0  # policies off the reference's support somewhere
        pi /= pi.sum(-1, keepdims=True)
        gaps = np.asarray(games.duality_gap(pi, pref, ref, beta=beta))
        assert np.all(np.isfinite(gaps)) and np.all(gaps >= 0.0)


def test_duality_gap_is_accurate_near_equilibrium_in_float32():
    nash = games.run_egpo(K10_GAME, UNIFORM10, jnp.zeros(10), beta=0.1, learning_rate=1.0,
                          num_steps=300).logits  # fmt: skip
    for scale in (1e-4, 1e-3, 1e-2):
        logits = np.asarray(nash, np.float64) + scale * RNG.normal(size=10)
        pi = special.softmax(logits)
        pref = np.asarray(K10_GAME, np.float64)
        a = pref @ pi
        q = special.softmax(np.log(0.1) + a / 0.1)
        expected = 2 * 0.1 * np_kl(pi, q)
        got = float(games.duality_gap(pi.astype(np.float32), K10_GAME, UNIFORM10, beta=0.1))
        assert abs(got - expected) < 1e-8 + 1e-3 * expected


def test_uniform_is_the_equilibrium_of_rock_paper_scissors():
    u = jnp.ones(3) / 3
    for beta in (0.0, 0.1, 1.0):
        gap = float(games.duality_gap(u, games.cyclic_game(3), u, beta=beta))
        assert gap == pytest.approx(0, abs=1e-7)  # float32 rounding of P u = 1/2


# --------------------------------------------------------------------- exact updates vs NumPy


def np_normalize(x):
    return x / x.sum(-1, keepdims=True)


@pytest.mark.parametrize("name", ["online_ipo", "nash_md", "egpo", "sppo"])
def test_steps_match_numpy(name):
    k, beta, eta = 5, 0.2, 0.7
    pref, ref, pi = np_random_game(k), np_dirichlet(k), np_dirichlet(k)
    anchor = pi ** (1 - eta * beta) * ref ** (eta * beta)
    if name == "online_ipo":
        expected = np_normalize(anchor * np.exp(eta * pref @ pi))
        got = games.online_ipo_step(np.log(pi), pref, ref, beta=beta, learning_rate=eta)
    elif name == "nash_md":
        mu = np_normalize(anchor)
        expected = np_normalize(mu * np.exp(eta * pref @ mu))
        got = games.nash_md_step(np.log(pi), pref, ref, beta=beta, learning_rate=eta)
    elif name == "egpo":
        half = np_normalize(anchor * np.exp(eta * pref @ pi))
        expected = np_normalize(anchor * np.exp(eta * pref @ half))
        got = games.egpo_step(np.log(pi), pref, ref, beta=beta, learning_rate=eta)
    else:
        expected = np_normalize(pi * np.exp(eta * (pref @ pi - 0.5)))
        got = games.sppo_step(np.log(pi), pref, learning_rate=eta)
    np.testing.assert_allclose(np.exp(got), expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------- runners


def test_egpo_last_iterate_reaches_gap_below_1e_minus_6():
    init = 2.0 * jax.random.normal(jax.random.key(1), (10,))
    run = games.run_egpo(K10_GAME, UNIFORM10, init, beta=0.1, learning_rate=1.0, num_steps=200)
    gaps = np.asarray(run.gaps)
    assert gaps.shape == (201,)
    assert gaps[0] > 0.1
    assert gaps[-1] < 1e-6
    np.testing.assert_allclose(np.asarray(run.policy).sum(), 1.0, rtol=1e-6)


def test_equilibrium_from_a_long_run_is_a_fixed_point_with_zero_gap():
    pref, ref = games.random_game(jax.random.key(5), 6), games.random_policy(jax.random.key(6), 6)
    run = games.run_egpo(pref, ref, jnp.zeros(6), beta=0.2, learning_rate=1.0, num_steps=1000)
    nash = run.policy
    assert float(games.duality_gap(nash, pref, ref, beta=0.2)) < 1e-6
    np.testing.assert_allclose(games.best_response(nash, pref, ref, beta=0.2), nash, atol=1e-5)
    # Unique equilibrium: another algorithm and initialisation land on the same policy.
    other = games.run_online_ipo(pref, ref, jnp.arange(6.0), beta=0.2, learning_rate=0.5,
                                 num_steps=2000).policy  # fmt: skip
    np.testing.assert_allclose(other, nash, atol=1e-5)


@pytest.mark.parametrize("runner", [games.run_nash_md, games.run_online_ipo])
def test_mirror_descent_runners_reduce_the_gap(runner):
    init = 2.0 * jax.random.normal(jax.random.key(1), (10,))
    run = runner(K10_GAME, UNIFORM10, init, beta=0.1, learning_rate=0.5, num_steps=300)
    gaps = np.asarray(run.gaps)
    assert gaps[-1] < 0.01 * gaps[0]


def test_unregularised_rock_paper_scissors_egpo_converges_where_mwu_cycles_out():
    pref, ref, init = games.cyclic_game(3), jnp.ones(3) / 3, jnp.array([1.0, 0.0, -0.5])
    kwargs = dict(beta=0.0, learning_rate=0.5, num_steps=2000)
    eg = games.run_egpo(pref, ref, init, **kwargs)
    mwu = games.run_sppo(pref, ref, init, **kwargs)
    assert eg.gaps[-1] < 1e-3 * eg.gaps[0]
    assert mwu.gaps[-1] > mwu.gaps[0]  # multiplicative weights spiral away from the equilibrium


def test_sppo_finds_the_condorcet_winner_of_a_transitive_game():
    pref = games.transitive_game(jnp.array([0.0, 1.0, 2.0, 0.5]))
    run = games.run_sppo(pref, jnp.ones(4) / 4, jnp.zeros(4), beta=0.0, learning_rate=1.0,
                         num_steps=300)  # fmt: skip
    assert float(run.policy[2]) > 0.999
    assert run.gaps[-1] < 1e-3 < run.gaps[0]


@pytest.mark.parametrize(
    "runner", [games.run_egpo, games.run_nash_md, games.run_online_ipo, games.run_sppo]
)
def test_runners_vmap_over_seeds_and_betas(runner):
    pref, ref = games.random_game(jax.random.key(2), 5), jnp.full((5,), 0.2)
    keys, betas = jax.random.split(jax.random.key(3), 3), jnp.array([0.05, 0.1, 0.3])

    def run(key, beta):
        init = jax.random.normal(key, (5,))
        return runner(pref, ref, init, beta=beta, learning_rate=0.8, num_steps=50)

    batched = jax.vmap(jax.vmap(run, in_axes=(0, None)), in_axes=(None, 0))(keys, betas)
    assert batched.gaps.shape == (3, 3, 51) and batched.logits.shape == (3, 3, 5)
    for b, beta in enumerate(betas):
        for s, key in enumerate(keys):
            single = run(key, beta)
            np.testing.assert_allclose(batched.logits[b, s], single.logits, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(batched.gaps[b, s], single.gaps, rtol=1e-4, atol=1e-7)


# --------------------------------------------------------------------- ties to the losses


def _population_pairs(lp, log_ref, win):
    """All K^2 pairs (y, y'), as the EGPO simulations' exact losses use them."""
    return lp[:, None], lp[None, :], log_ref[:, None], log_ref[None, :], win[:, None], win[None, :]


@pytest.mark.parametrize("name", ["online_ipo_omd", "nash_md"])
def test_sgd_on_the_loss_is_the_closed_form_step(name):
    # d/dlogits mean_{y,y'}(h - (g_y - g_y')/beta)^2 = (4/K)(d - mean d), d = log pi/ref - g/beta:
    # one SGD step at rate lr is the mirror-descent step with eta = 4 lr / (K beta).
    k, beta, lr = 6, 0.2, 0.03
    pref, ref = jnp.asarray(np_random_game(k)), jnp.asarray(np_dirichlet(k))
    logits = jnp.asarray(RNG.normal(size=k))
    eta = 4 * lr / (k * beta)

    def loss(theta):
        lp = jax.nn.log_softmax(theta)
        if name == "nash_md":
            mixture = jnp.exp(geometric_mixture(lp, jnp.log(ref), mixture=eta * beta))
            return nash_md(*_population_pairs(lp, jnp.log(ref), pref @ mixture), beta=beta)
        opponent = jax.nn.softmax(theta)
        return online_ipo_omd(*_population_pairs(lp, jnp.log(ref), pref @ opponent), beta=beta)

    stepped = jax.nn.log_softmax(logits - lr * jax.grad(loss)(logits))
    step = games.nash_md_step if name == "nash_md" else games.online_ipo_step
    closed = step(logits, pref, ref, beta=beta, learning_rate=eta)
    np.testing.assert_allclose(stepped, closed, atol=2e-6)


def test_extragradient_helper_on_the_egpo_loss_reproduces_run_egpo():
    k, beta, lr, steps = 10, 0.1, 0.25, 100
    eta = 4 * lr / (k * beta)
    log_ref = jnp.log(UNIFORM10)

    def loss(theta, win):
        return egpo(*_population_pairs(jax.nn.log_softmax(theta), log_ref, win), beta=beta)

    eg = extragradient(loss, optax.sgd(lr))

    def body(carry, _):
        theta, state = carry
        half = eg.lookahead(theta, state, K10_GAME @ jax.nn.softmax(theta))
        theta, state, _ = eg.update(theta, state, K10_GAME @ jax.nn.softmax(half))
        return (theta, state), None

    init = jax.random.normal(jax.random.key(7), (k,))
    (theta, _), _ = jax.lax.scan(
        jax.jit(body), (init, optax.sgd(lr).init(init)), None, length=steps
    )
    run = games.run_egpo(K10_GAME, UNIFORM10, init, beta=beta, learning_rate=eta, num_steps=steps)
    np.testing.assert_allclose(jax.nn.softmax(theta), run.policy, atol=1e-5)
    assert float(games.duality_gap(jax.nn.softmax(theta), K10_GAME, UNIFORM10, beta=beta)) < 1e-6


def test_online_ipo_loss_based_runner_reaches_the_same_equilibrium():
    # online_ipo_2 population form: E_{y,y' ~ sg(pi)} (h - (P(y > y') - 1/2)/beta)^2.
    beta, lr, log_ref = 0.1, 1.0, jnp.log(UNIFORM10)

    def loss(theta):
        lp, pi = jax.nn.log_softmax(theta), jax.lax.stop_gradient(jax.nn.softmax(theta))
        per = online_ipo(lp[:, None], lp[None, :], log_ref[:, None], log_ref[None, :], K10_GAME,
                         beta=beta, reduce_fn=None)  # fmt: skip
        return jnp.sum(pi[:, None] * pi[None, :] * per)

    @jax.jit
    def train(theta):
        return jax.lax.fori_loop(0, 3000, lambda _, t: t - lr * jax.grad(loss)(t), theta)

    theta = train(jnp.zeros(10))
    nash = games.run_egpo(K10_GAME, UNIFORM10, jnp.zeros(10), beta=beta, learning_rate=1.0,
                          num_steps=300).policy  # fmt: skip
    np.testing.assert_allclose(jax.nn.softmax(theta), nash, atol=1e-4)


def test_sppo_loss_step_and_closed_form_both_improve_the_win_rate_against_pi_t():
    k, eta = 6, 2.0
    pref = jnp.asarray(np_random_game(k))
    logits = jnp.asarray(RNG.normal(size=k))
    lp_t = jax.nn.log_softmax(logits)
    pi_t = jnp.exp(lp_t)
    win = pref @ pi_t

    def loss(theta):  # responses y ~ pi_t: the population loss weights them by pi_t
        per = sppo(jax.nn.log_softmax(theta), lp_t, win, beta=1 / eta, reduce_fn=None)
        return jnp.sum(pi_t * per)

    def win_rate_vs_pi_t(lp):
        return float(jnp.exp(lp) @ win)

    baseline = win_rate_vs_pi_t(lp_t)  # = 1/2
    loss_step = jax.nn.log_softmax(logits - 1e-3 * jax.grad(loss)(logits))
    closed = games.sppo_step(logits, pref, learning_rate=1e-3 * eta)
    assert baseline == pytest.approx(0.5, abs=1e-6)
    assert win_rate_vs_pi_t(loss_step) > baseline
    assert win_rate_vs_pi_t(closed) > baseline
    # The exact SPPO step zeroes the loss up to the normaliser, which the -1/2 centring absorbs:
    full = games.sppo_step(logits, pref, learning_rate=eta)
    residual = full - lp_t - eta * (win - 0.5)
    np.testing.assert_allclose(residual, residual[0], atol=1e-5)  # a constant shift only
