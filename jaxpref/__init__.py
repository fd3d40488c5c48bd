"""jaxpref: learning from preferences in JAX.

Pure objectives (:mod:`jaxpref.losses`), log-prob utilities (:mod:`jaxpref.logprobs`) and
metrics (:mod:`jaxpref.metrics`). Importing jaxpref has no side effects.
"""

from jaxpref import games as games
from jaxpref import logprobs as logprobs
from jaxpref import losses as losses
from jaxpref import metrics as metrics
from jaxpref import rewards as rewards
from jaxpref import testing as testing

__version__ = "0.1.0"

__all__ = ["games", "logprobs", "losses", "metrics", "rewards", "testing"]
