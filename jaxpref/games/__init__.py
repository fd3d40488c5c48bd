"""Exact tabular preference games: test beds for the Nash-learning objectives.

:mod:`jaxpref.games.tabular` defines the games (preference matrices with ``P + P^T = 1``,
reference policies), the KL-regularised game value and its exact duality gap;
:mod:`jaxpref.games.dynamics` runs Nash-MD, online IPO, SPPO and EGPO on them exactly.

>>> import jax, jax.numpy as jnp
>>> from jaxpref import games
>>> P, ref = games.random_game(jax.random.key(0), 10), jnp.full((10,), 0.1)
>>> run = games.run_egpo(P, ref, jnp.zeros(10), beta=0.1, learning_rate=1.0, num_steps=200)
>>> bool(run.gaps[-1] < 1e-6)
True
"""

from jaxpref.games.dynamics import GameRun as GameRun
from jaxpref.games.dynamics import egpo_step as egpo_step
from jaxpref.games.dynamics import nash_md_step as nash_md_step
from jaxpref.games.dynamics import online_ipo_step as online_ipo_step
from jaxpref.games.dynamics import run_egpo as run_egpo
from jaxpref.games.dynamics import run_nash_md as run_nash_md
from jaxpref.games.dynamics import run_online_ipo as run_online_ipo
from jaxpref.games.dynamics import run_sppo as run_sppo
from jaxpref.games.dynamics import sppo_step as sppo_step
from jaxpref.games.tabular import best_response as best_response
from jaxpref.games.tabular import cyclic_game as cyclic_game
from jaxpref.games.tabular import duality_gap as duality_gap
from jaxpref.games.tabular import game_value as game_value
from jaxpref.games.tabular import kl_divergence as kl_divergence
from jaxpref.games.tabular import random_game as random_game
from jaxpref.games.tabular import random_policy as random_policy
from jaxpref.games.tabular import transitive_game as transitive_game
from jaxpref.games.tabular import win_rates as win_rates

__all__ = [
    "GameRun",
    "best_response",
    "cyclic_game",
    "duality_gap",
    "egpo_step",
    "game_value",
    "kl_divergence",
    "nash_md_step",
    "online_ipo_step",
    "random_game",
    "random_policy",
    "run_egpo",
    "run_nash_md",
    "run_online_ipo",
    "run_sppo",
    "sppo_step",
    "transitive_game",
    "win_rates",
]
