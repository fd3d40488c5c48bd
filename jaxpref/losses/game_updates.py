"""Update-step helpers for the game objectives: EGPO's extragradient as two pure calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

from jaxpref.types import Array


class Extragradient(NamedTuple):
    """The two calls of an extragradient update (see :func:`extragradient`).

    Attributes:
      lookahead: ``(params, opt_state, *args) -> half_params``: a step of ``optimizer`` on
        ``loss_fn(params, *args)`` whose optimizer state is discarded.
      update: ``(params, opt_state, *args) -> (params, opt_state, loss)``: the real step from
        ``params``, committing the optimizer state.
    """

    lookahead: Callable[..., Any]
    update: Callable[..., tuple[Any, Any, Array]]


def extragradient(
    loss_fn: Callable[..., Array], optimizer: optax.GradientTransformation
) -> Extragradient:
    """Builds EGPO's two-call extragradient update around any optax optimizer.

    ``loss_fn(params, *args)`` is a scalar loss whose ``args`` carry the (stop-gradient)
    opponent targets, e.g. :func:`jaxpref.losses.game.egpo` with win rates. One EGPO update is::

        half = eg.lookahead(params, opt_state, targets_from(params))
        params, opt_state, loss = eg.update(params, opt_state, targets_from(half))

    where ``targets_from(p)`` are the win rates against the policy with parameters ``p``
    (exact in a tabular game, or sampled ``y'' ~ π_p`` and labelled, for a language model:
    sampling happens between the two calls, outside the loss). Both gradients are taken at
    ``params``; only the second moves them. With ``optax.sgd`` this is exactly the EGPO
    simulations' ``extragradient`` (step, step back with ``-g``, step with the half-step
    targets). With a stateful optimizer (Adam) the lookahead uses but does not advance the
    state, whereas the reference code advances it three times per update.

    Args:
      loss_fn: ``(params, *args) -> scalar``.
      optimizer: an optax gradient transformation.

    Returns:
      An :class:`Extragradient` of two pure (jittable) functions.

    >>> import jax, jax.numpy as jnp, optax
    >>> from jaxpref.losses.game import egpo
    >>> P = jnp.array([[0.5, 0.9], [0.1, 0.5]])
    >>> def loss(logits, win):  # population EGPO loss over both actions, reference uniform
    ...     lp = jax.nn.log_softmax(logits)
    ...     return egpo(lp[:, None], lp[None, :], None, None, win[:, None], win[None, :])
    >>> eg = extragradient(loss, optax.sgd(0.1))
    >>> params = jnp.zeros(2)
    >>> state = optax.sgd(0.1).init(params)
    >>> half = eg.lookahead(params, state, P @ jax.nn.softmax(params))
    >>> params, state, _ = eg.update(params, state, P @ jax.nn.softmax(half))
    >>> bool(params[0] > params[1])  # action 0 is preferred
    True

    References:
      Zhou, Fazel & Du, Extragradient Preference Optimization (EGPO), 2025, arXiv:2503.08942
      (code: zhourunlong/EGPO, ``simulations/loss_funcs.py::extragradient``).
      Korpelevich, The extragradient method for finding saddle points, 1976.
    """
    grad_fn = jax.value_and_grad(loss_fn)

    def lookahead(params: Any, opt_state: Any, *args: Any) -> Any:
        _, grads = grad_fn(params, *args)
        updates, _ = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates)

    def update(params: Any, opt_state: Any, *args: Any) -> tuple[Any, Any, Array]:
        loss, grads = grad_fn(params, *args)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return Extragradient(lookahead, update)
