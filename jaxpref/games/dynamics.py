"""Exact learning dynamics on tabular games: Nash-MD, online IPO, SPPO and EGPO.

The ``*_step`` functions are the exact (population) updates in log space; the ``run_*``
functions iterate them with ``lax.scan`` under ``jit`` and record the exact duality gap after
every step. All are pure and vmappable over initialisations (seeds), games, ``β`` and
learning rates. A step at mirror-descent rate ``η`` equals one SGD step at rate
``lr = ηKβ/4`` on the corresponding population loss of :mod:`jaxpref.losses.game` over all
``K²`` pairs with softmax logits (the parametrisation of the EGPO simulations).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxpref.games.tabular import _float, _gap_from_logps, win_rates
from jaxpref.types import Array


def _mirror_step(logp: Array, opponent: Array, preference, log_ref, beta, lr) -> Array:
    """``log π' ∝ (1-ηβ) log π + ηβ log π_ref + η P(·≻opponent)`` (entropic mirror descent)."""
    beta, lr = beta[..., None], lr[..., None]
    new = (1.0 - lr * beta) * logp + lr * beta * log_ref + lr * win_rates(preference, opponent)
    return jax.nn.log_softmax(new, axis=-1)


def _prepare(logits, preference, reference, beta, learning_rate):
    logp = jax.nn.log_softmax(_float(logits), axis=-1)
    batch = logp.shape[:-1]
    return (
        logp,
        _float(preference),
        jnp.log(_float(reference)),
        jnp.broadcast_to(_float(beta), batch),
        jnp.broadcast_to(_float(learning_rate), batch),
    )


def online_ipo_step(logits, preference, reference, *, beta, learning_rate) -> Array:
    """One exact online-IPO (OMD) update: mirror descent against the current policy.

    ``log π_{t+1} = (1-ηβ) log π_t + ηβ log π_ref + η P(·≻π_t)`` (normalised): one SGD step
    at rate ``lr = ηKβ/4`` on the population :func:`jaxpref.losses.game.online_ipo_omd` loss over
    all ``K²`` pairs with softmax logits (EGPO simulations, ``online_ipo_1``). Needs
    ``ηβ ≤ 1``.

    Args:
      logits: ``[..., K]`` policy logits.
      preference: ``[..., K, K]`` preference matrix.
      reference: ``[..., K]`` reference policy.
      beta: KL strength ``β``.
      learning_rate: mirror-descent step ``η``.

    Returns:
      ``[..., K]`` normalised log-probs of the new policy.
    """
    logp, p, log_ref, beta, lr = _prepare(logits, preference, reference, beta, learning_rate)
    return _mirror_step(logp, jnp.exp(logp), p, log_ref, beta, lr)


def nash_md_step(logits, preference, reference, *, beta, learning_rate) -> Array:
    """One exact Nash-MD update: mirror descent against the geometric mixture.

    ``π^μ ∝ π_t^{1-ηβ} π_ref^{ηβ}`` and ``π_{t+1} ∝ π^μ · exp(η P(·≻π^μ))`` (Munos et al.,
    Nash-MD; FORMULAS D1), i.e. ``log π_{t+1} = (1-ηβ) log π_t + ηβ log π_ref + η P(·≻π^μ)``:
    one SGD step at ``lr = ηKβ/4`` on the population :func:`jaxpref.losses.game.nash_md` loss (EGPO
    simulations, ``nash_md``). Needs ``ηβ ≤ 1``. With a constant ``η`` the fixed point is the
    best response to its own mixture, not to itself: an ``O(ηβ)`` bias that vanishes as
    ``η → 0`` (Munos et al. analyse decreasing steps). Args and Returns as
    :func:`online_ipo_step`.
    """
    logp, p, log_ref, beta, lr = _prepare(logits, preference, reference, beta, learning_rate)
    mixture = jax.nn.softmax((1.0 - lr * beta)[..., None] * logp + (lr * beta)[..., None] * log_ref)
    return _mirror_step(logp, mixture, p, log_ref, beta, lr)


def egpo_step(logits, preference, reference, *, beta, learning_rate) -> Array:
    """One exact EGPO (extragradient) update in log space.

    ``log π_{t+½} ∝ (1-ηβ) log π_t + ηβ log π_ref + η P(·≻π_t)``, then
    ``log π_{t+1} ∝ (1-ηβ) log π_t + ηβ log π_ref + η P(·≻π_{t+½})``: both steps start from
    ``π_t``; the second uses the half-step policy as the opponent (EGPO simulations
    ``extragradient`` with SGD at ``lr = ηKβ/4`` on softmax logits; FORMULAS D4). Args and
    Returns as :func:`online_ipo_step`.
    """
    logp, p, log_ref, beta, lr = _prepare(logits, preference, reference, beta, learning_rate)
    half = _mirror_step(logp, jnp.exp(logp), p, log_ref, beta, lr)
    return _mirror_step(logp, jnp.exp(half), p, log_ref, beta, lr)


def sppo_step(logits, preference, *, learning_rate) -> Array:
    """One exact SPPO update: ``π_{t+1} ∝ π_t · exp(η (P(·≻π_t) - ½))`` (Wu et al.).

    Multiplicative weights on the *unregularised* game, ``η = 1/β_SPPO``: the previous
    iterate is the only anchor, so there is no reference term.

    Args:
      logits: ``[..., K]`` policy logits.
      preference: ``[..., K, K]`` preference matrix.
      learning_rate: ``η``.

    Returns:
      ``[..., K]`` normalised log-probs of the new policy.
    """
    logp = jax.nn.log_softmax(_float(logits), axis=-1)
    lr = jnp.asarray(_float(learning_rate))[..., None]
    return jax.nn.log_softmax(logp + lr * (win_rates(preference, jnp.exp(logp)) - 0.5), axis=-1)


# ----------------------------------------------------------------------------- runners


class GameRun(NamedTuple):
    """The result of a ``run_*`` function.

    Attributes:
      logits: ``[..., K]`` final normalised log-probs.
      gaps: ``[..., num_steps + 1]`` duality gap of the initial policy, then after each step.
    """

    logits: Array
    gaps: Array

    @property
    def policy(self) -> Array:
        """``[..., K]`` final policy probabilities."""
        return jnp.exp(self.logits)


def _run(step: Callable[[Array], Array], logits, preference, reference, beta, num_steps):
    logp = jax.nn.log_softmax(_float(logits), axis=-1)
    p, log_ref = _float(preference), jnp.log(_float(reference))
    beta = jnp.broadcast_to(_float(beta), logp.shape[:-1])

    def body(lp, _):
        lp = step(lp)
        return lp, _gap_from_logps(lp, p, log_ref, beta)

    final, gaps = jax.lax.scan(body, logp, None, length=num_steps)
    gaps = jnp.concatenate([_gap_from_logps(logp, p, log_ref, beta)[None], gaps])
    return GameRun(final, jnp.moveaxis(gaps, 0, -1))


def _runner_doc(name: str, step: str, note: str = "") -> str:
    return f"""Runs {name} for ``num_steps`` exact steps ({step}), recording the duality gap.

    Pure and jitted (``num_steps`` is static); ``vmap`` it over initial logits (seeds), games,
    ``beta`` or ``learning_rate``.{note}

    Args:
      preference: ``[..., K, K]`` preference matrix.
      reference: ``[..., K]`` reference policy (full support).
      initial_logits: ``[..., K]`` initial policy logits.
      beta: KL strength ``β`` of the game.
      learning_rate: step size ``η``.
      num_steps: number of updates (static).

    Returns:
      A :class:`GameRun`: final log-probs and ``[..., num_steps + 1]`` gaps.
    """


def _make_runner(name: str, step_fn: Callable[..., Array], doc: str, *, regularised: bool = True):
    def run(preference, reference, initial_logits, *, beta, learning_rate, num_steps):
        if regularised:
            kwargs = {"reference": reference, "beta": beta}
        else:
            kwargs = {}
        step = functools.partial(
            step_fn, preference=preference, learning_rate=learning_rate, **kwargs
        )
        return _run(step, initial_logits, preference, reference, beta, num_steps)

    run.__doc__ = doc
    run.__name__ = run.__qualname__ = name
    return jax.jit(run, static_argnames=("num_steps",))


run_online_ipo = _make_runner(
    "run_online_ipo",
    online_ipo_step,
    _runner_doc("online IPO (mirror descent)", ":func:`online_ipo_step`"),
)
run_nash_md = _make_runner(
    "run_nash_md", nash_md_step, _runner_doc("Nash-MD", ":func:`nash_md_step`")
)
run_egpo = _make_runner("run_egpo", egpo_step, _runner_doc("EGPO", ":func:`egpo_step`"))
run_sppo = _make_runner(
    "run_sppo",
    sppo_step,
    _runner_doc(
        "SPPO",
        ":func:`sppo_step`",
        "\n\n    ``beta`` and ``reference`` define the game whose gap is reported; SPPO's update"
        "\n    uses neither (it is multiplicative weights on the unregularised game with"
        "\n    ``η = learning_rate``), so its last iterate need not approach the regularised"
        "\n    equilibrium.",
    ),
    regularised=False,
)
