"""Synthetic tasks with programmatic judges, for experiments that need no downloaded data.

* :mod:`~jaxpref.tasks.arithmetic`: multi-digit addition over a character vocabulary, a
  judge giving partial credit per answer position, a held-out split and SFT examples.
* :mod:`~jaxpref.tasks.instructions`: chat prompts with format constraints (a bare number,
  one word, at most N words, lowercase, a question) and a judge of decoded replies, for
  real chat models.
* :mod:`~jaxpref.tasks.judged`: for any such task, on-policy sampling and greedy evaluation
  with the jit-compiled sampler, and pairwise or ranked examples from judged samples.

Importing this package has no side effects.
"""

from jaxpref.tasks import arithmetic as arithmetic
from jaxpref.tasks import instructions as instructions
from jaxpref.tasks.arithmetic import Addition as Addition
from jaxpref.tasks.judged import Evaluation as Evaluation
from jaxpref.tasks.judged import Judgement as Judgement
from jaxpref.tasks.judged import PairStats as PairStats
from jaxpref.tasks.judged import Samples as Samples
from jaxpref.tasks.judged import Task as Task
from jaxpref.tasks.judged import evaluate as evaluate
from jaxpref.tasks.judged import preference_pairs as preference_pairs
from jaxpref.tasks.judged import ranked_lists as ranked_lists
from jaxpref.tasks.judged import sample as sample
from jaxpref.tasks.judged import tokenized_example as tokenized_example

__all__ = [
    "Addition",
    "Evaluation",
    "Judgement",
    "PairStats",
    "Samples",
    "Task",
    "arithmetic",
    "evaluate",
    "instructions",
    "preference_pairs",
    "ranked_lists",
    "sample",
    "tokenized_example",
]
