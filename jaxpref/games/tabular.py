"""Tabular preference games: generators, the regularised game value and its exact duality gap.

A game is a preference matrix ``P`` over K actions (responses) with ``P + P^T = 1``
(``P[i, j] = P(i ≻ j)``, diagonal ½), a reference policy ``π_ref`` with full support and a KL
strength ``β``. Policies are probability vectors ``[..., K]`` (softmax of logits). The
KL-regularised game value is

.. math:: V(p_1, p_2) = p_1^\\top P p_2 - \\beta\\,KL(p_1\\|\\pi_{ref})
          + \\beta\\,KL(p_2\\|\\pi_{ref})

(the metric of the EGPO simulations). Its Nash equilibrium is unique for ``β > 0``; the
:func:`duality_gap` measures the distance to it exactly, via the closed-form best response.
Everything is computed in float32 (float64 under x64).

Closed forms (derived here). For ``a = Pπ`` (the win rates ``P(y ≻ π)``),
``max_q V(q, π)`` is attained at ``q* ∝ π_ref·exp(a/β)`` with value
``β log Σ π_ref exp(a/β) + β KL(π‖π_ref)``. Because ``πᵀPq = 1 - qᵀPπ``,
``min_q V(π, q)`` is attained at the same ``q*`` with value ``1 - β log Σ π_ref exp(a/β) -
β KL(π‖π_ref)``. Since ``πᵀPπ = ½`` the duality gap is

.. math:: \\max_q V(q, \\pi) - \\min_q V(\\pi, q) = 2\\beta\\,KL(\\pi \\,\\|\\, q^*(\\pi)) \\ge 0,

zero exactly when ``π = q*(π)``, the equilibrium. For ``β = 0`` it is ``2 max_i (Pπ)_i - 1``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxpref.types import Array, ArrayLike


def _float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


# ----------------------------------------------------------------------------- generators


def _from_upper(upper: Array) -> Array:
    """The preference matrix whose strict upper triangle is ``upper``'s (``P + P^T = 1``)."""
    k = upper.shape[-1]
    above = jnp.triu(jnp.ones((k, k), bool), 1)
    lower = 1.0 - jnp.swapaxes(upper, -1, -2)
    return jnp.where(above, upper, jnp.where(above.T, lower, 0.5))


def random_game(key: Array, num_actions: int, *, dtype=jnp.float32) -> Array:
    """A random preference matrix: ``P[i, j] ~ U(0, 1)`` for ``i < j``, ``P[j, i] = 1 - P[i, j]``.

    Random games are intransitive in general. ``vmap`` over keys for a batch of games.

    Args:
      key: a PRNG key.
      num_actions: K.
      dtype: float dtype of the result.

    Returns:
      ``[K, K]`` preference matrix with diagonal ½ and ``P + P^T = 1``.

    >>> import jax
    >>> P = random_game(jax.random.key(0), 4)
    >>> bool(jax.numpy.allclose(P + P.T, 1.0))
    True
    """
    return _from_upper(jax.random.uniform(key, (num_actions, num_actions), dtype))


def cyclic_game(num_actions: int = 3, *, strength: ArrayLike = 0.5) -> Array:
    """A cyclic (rock-paper-scissors) game: action ``i`` beats ``i + 1 (mod K)``.

    ``P[i, i+1] = ½ + strength``, ``P[i+1, i] = ½ - strength``, every other pair ½. With
    ``K = 3`` and ``strength = ½`` it is rock-paper-scissors (A ≻ B ≻ C ≻ A), whose
    unregularised equilibrium is uniform.

    Args:
      num_actions: K ≥ 3.
      strength: in ``[0, ½]``.

    Returns:
      ``[K, K]`` preference matrix.

    >>> cyclic_game(3).tolist()
    [[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]]
    """
    if num_actions < 3:
        raise ValueError(f"a cyclic game needs num_actions >= 3, got {num_actions}")
    beats = jnp.roll(jnp.eye(num_actions), 1, axis=1)  # beats[i, i + 1] = 1
    s = _float(strength)
    return 0.5 + s * (beats - beats.T)


def transitive_game(rewards: ArrayLike, *, temperature: ArrayLike = 1.0) -> Array:
    """A Bradley-Terry (transitive) game: ``P[i, j] = σ((r_i - r_j) / τ)``.

    Args:
      rewards: ``[..., K]`` scalar rewards.
      temperature: ``τ > 0``.

    Returns:
      ``[..., K, K]`` preference matrix; the action of highest reward is the Condorcet winner.

    >>> import jax.numpy as jnp
    >>> transitive_game(jnp.array([0.0, 0.0])).tolist()
    [[0.5, 0.5], [0.5, 0.5]]
    """
    r = _float(rewards)
    return jax.nn.sigmoid((r[..., :, None] - r[..., None, :]) / temperature)


def random_policy(key: Array, num_actions: int, *, concentration: ArrayLike = 1.0) -> Array:
    """A Dirichlet(``concentration``) policy ``[K]``, e.g. a random reference policy."""
    return jax.random.dirichlet(key, jnp.full((num_actions,), concentration, jnp.float32))


# ----------------------------------------------------------------------------- game math


def kl_divergence(p: ArrayLike, q: ArrayLike) -> Array:
    """``KL(p‖q) = Σ p log(p/q)`` over the last axis, with ``0 log 0 = 0``."""
    p, q = _float(p), _float(q)
    return jnp.sum(jax.scipy.special.xlogy(p, p) - jax.scipy.special.xlogy(p, q), axis=-1)


def win_rates(preference: ArrayLike, policy: ArrayLike) -> Array:
    """``P(y ≻ π) = Σ_j P[y, j] π_j`` for every action: ``[..., K]``."""
    return jnp.einsum("...ij,...j->...i", _float(preference), _float(policy))


def game_value(
    policy_1: ArrayLike,
    policy_2: ArrayLike,
    preference: ArrayLike,
    reference: ArrayLike,
    *,
    beta: ArrayLike,
) -> Array:
    """``V(p1, p2) = p1ᵀ P p2 - β KL(p1‖π_ref) + β KL(p2‖π_ref)`` (p1 maximises, p2 minimises).

    Args:
      policy_1: ``[..., K]`` the maximising player's policy.
      policy_2: ``[..., K]`` the minimising player's policy.
      preference: ``[..., K, K]`` preference matrix.
      reference: ``[..., K]`` reference policy.
      beta: KL strength ``β ≥ 0``.

    Returns:
      ``[...]`` game values.

    >>> import jax.numpy as jnp
    >>> u = jnp.ones(3) / 3
    >>> float(game_value(u, u, cyclic_game(3), u, beta=0.1))
    0.5
    """
    p1, p2 = _float(policy_1), _float(policy_2)
    payoff = jnp.sum(p1 * win_rates(preference, p2), axis=-1)
    return payoff - beta * kl_divergence(p1, reference) + beta * kl_divergence(p2, reference)


def best_response(
    policy: ArrayLike, preference: ArrayLike, reference: ArrayLike, *, beta: ArrayLike
) -> Array:
    """The regularised best response ``q* ∝ π_ref · exp(P(·≻π)/β)``.

    It maximises ``V(q, π)`` over ``q`` (the Gibbs variational principle) and, the game
    being symmetric, also minimises ``V(π, q)``. Requires ``β > 0``.

    Args:
      policy: ``[..., K]`` the opponent's policy ``π``.
      preference: ``[..., K, K]`` preference matrix.
      reference: ``[..., K]`` reference policy with full support.
      beta: KL strength ``β > 0``.

    Returns:
      ``[..., K]`` best-response policy.

    >>> import jax.numpy as jnp
    >>> u = jnp.ones(3) / 3
    >>> [round(float(x), 4) for x in best_response(u, cyclic_game(3), u, beta=0.1)]
    [0.3333, 0.3333, 0.3333]
    """
    logits = jnp.log(_float(reference)) + win_rates(preference, policy) / beta
    return jax.nn.softmax(logits, axis=-1)


def _gap_from_logps(logp: Array, preference: Array, log_ref: Array, beta: Array) -> Array:
    """``2β KL(π‖q*(π))`` from log-probs, accurate near equilibrium (see :func:`duality_gap`)."""
    pi = jnp.exp(logp)
    a = win_rates(preference, pi)
    positive = beta > 0
    safe_beta = jnp.where(positive, beta, 1.0)
    support = pi > 0
    # log π - log q* = z + log Z with z = log π - log π_ref - a/β and Z = Σ π_ref exp(a/β).
    z = jnp.where(support, logp - log_ref - a / safe_beta[..., None], 0.0)
    mean_z = jnp.sum(pi * z, axis=-1, keepdims=True)
    naive = mean_z[..., 0] + jax.nn.logsumexp(log_ref + a / safe_beta[..., None], axis=-1)
    # With full support Z = Σ π exp(-z), so KL = log(Σ π exp(-w) / Σ π) for w = z - mean_z: a
    # log1p of a sum of small terms near equilibrium, free of the cancellation in ``naive``.
    # A second centring pass makes Σ π w vanish to the precision of w itself, not of z.
    w = jnp.where(support, z - mean_z, 0.0)
    mass = jnp.sum(pi, axis=-1, keepdims=True)
    w = jnp.where(support, w - jnp.sum(pi * w, axis=-1, keepdims=True) / mass, 0.0)
    near = jnp.all(support, axis=-1) & (jnp.max(jnp.abs(w), axis=-1) < 1.0)
    excess = jnp.sum(pi * jnp.expm1(-jnp.clip(w, -1.0, 1.0)), axis=-1) / mass[..., 0]
    stable = jnp.log1p(excess)
    kl = jnp.maximum(jnp.where(near, stable, naive), 0.0)
    return jnp.where(positive, 2.0 * beta * kl, 2.0 * jnp.max(a, axis=-1) - 1.0)


def duality_gap(
    policy: ArrayLike, preference: ArrayLike, reference: ArrayLike, *, beta: ArrayLike
) -> Array:
    """The exact duality gap ``max_q V(q, π) - min_q V(π, q)`` of the regularised game.

    Computed from the closed-form best response as ``2β KL(π ‖ q*(π))`` (derivation in the
    module docstring), accurate to float rounding near the equilibrium; ``β = 0`` gives the
    unregularised gap ``2 max_i (Pπ)_i - 1``. It is ≥ 0 and 0 only at the Nash equilibrium.

    Args:
      policy: ``[..., K]`` policy ``π``.
      preference: ``[..., K, K]`` preference matrix with ``P + P^T = 1``.
      reference: ``[..., K]`` reference policy with full support.
      beta: KL strength ``β ≥ 0`` (scalar or ``[...]``).

    Returns:
      ``[...]`` duality gaps.

    >>> import jax.numpy as jnp
    >>> u = jnp.ones(3) / 3
    >>> round(float(duality_gap(u, cyclic_game(3), u, beta=0.1)), 7)  # uniform is the equilibrium
    0.0
    """
    pi = _float(policy)
    logp = jnp.where(pi > 0, jnp.log(jnp.where(pi > 0, pi, 1.0)), -jnp.inf)
    beta = jnp.broadcast_to(_float(beta), pi.shape[:-1])
    return _gap_from_logps(logp, _float(preference), jnp.log(_float(reference)), beta)
