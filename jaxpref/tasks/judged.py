"""On-policy samples judged by a program, and the preference data made from them.

Works with any :class:`Task`: something that turns problems into fixed-length prompts and
judges completions of a fixed number of tokens (:class:`jaxpref.tasks.arithmetic.Addition`
is one). :func:`sample` draws ``K`` completions per problem with the jit-compiled
:func:`jaxpref.models.generate` (fixed shapes: one compilation per batch size) and judges
them; :func:`evaluate` is greedy decoding, judged; :func:`preference_pairs` (best sample over
worst) and :func:`ranked_lists` (all ``K`` with their credits) make
:class:`~jaxpref.data.TokenizedExample` s for :func:`jaxpref.train.train`, counting the
prompts whose samples all tie and so carry no preference.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxpref.data.tokenize import TokenizedExample
from jaxpref.models import Transformer, generate

__all__ = [
    "Evaluation",
    "Judgement",
    "PairStats",
    "Samples",
    "Task",
    "best_and_worst",
    "evaluate",
    "preference_pairs",
    "ranked_lists",
    "sample",
    "tokenized_example",
]


class Judgement(NamedTuple):
    """A judge's verdict on completions, one value per completion.

    Attributes:
      credit: float64 partial credit in [0, 1] (e.g. the fraction of answer tokens right).
      correct: bool, the completion is right (``credit == 1``).
    """

    credit: np.ndarray
    correct: np.ndarray


class Task(Protocol):
    """What :func:`sample` needs of a task.

    Attributes:
      answer_length: tokens sampled per completion (the longest answer, end token included).
      eos_id: the end token; sampling stops there.
      pad_id: written after the end token.
    """

    answer_length: int
    eos_id: int
    pad_id: int

    def prompts(self, problems: np.ndarray) -> np.ndarray:
        """int ``[n, prompt_length]`` prompt ids of ``n`` problems (no padding)."""
        ...

    def judge(
        self, problems: np.ndarray, tokens: np.ndarray, mask: np.ndarray | None = None
    ) -> Judgement:
        """The verdict on completions ``tokens [n, ..., answer_length]`` of the problems."""
        ...


def tokenized_example(
    kind: str, prompt: np.ndarray, responses: Sequence[np.ndarray], **features: Any
) -> TokenizedExample:
    """One example: ``prompt + response`` per response, trained on the response tokens.

    >>> ex = tokenized_example("pairwise", np.array([1, 5]), [np.array([7, 2]), np.array([2])])
    >>> [s.tolist() for s in ex.input_ids], [m.tolist() for m in ex.response_mask]
    ([[1, 5, 7, 2], [1, 5, 2]], [[False, False, True, True], [False, False, True]])
    """
    prompt = np.asarray(prompt)
    ids = tuple(np.concatenate([prompt, r]).astype(np.int32) for r in responses)
    masks = tuple(np.arange(len(s)) >= len(prompt) for s in ids)
    return TokenizedExample(kind, ids, masks, len(prompt), features)


class Samples(NamedTuple):
    """Completions ``[n, K, answer_length]`` of ``n`` problems and the judge's verdict.

    Attributes:
      problems: ``[n, ...]`` the problems, as the task describes them.
      tokens: int32 completion ids, the task's ``pad_id`` after the end token.
      mask: bool, True at generated tokens (the end token included).
      judgement: the judge's :class:`Judgement` ``[n, K]``.
    """

    problems: np.ndarray
    tokens: np.ndarray
    mask: np.ndarray
    judgement: Judgement


def sample(
    model: Transformer,
    task: Task,
    problems: np.ndarray,
    *,
    num_samples: int,
    temperature: float,
    rng: jax.Array | None = None,
    batch_size: int = 1024,
    progress: bool = True,
    desc: str = "sampling",
) -> Samples:
    """``num_samples`` completions of each problem, judged (``temperature=0``: greedy).

    Prompts are run in chunks of ``batch_size`` rows (the last chunk padded), so every call
    with the same ``batch_size`` reuses one compiled :func:`~jaxpref.models.generate`.
    """
    problems = np.asarray(problems)
    prompts = np.repeat(task.prompts(problems), num_samples, axis=0)
    rows = len(prompts)
    if rng is None and temperature > 0:
        raise ValueError("rng is required when temperature > 0")
    tokens, mask = [], []
    for start in tqdm(range(0, rows, batch_size), desc=desc, disable=not progress, leave=False):
        chunk = prompts[start : start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - len(chunk), 0)])
        key = None if rng is None else jax.random.fold_in(rng, start)
        out = generate(
            model,
            padded,
            max_new_tokens=task.answer_length,
            rng=key,
            temperature=temperature,
            eos_token_id=task.eos_id,
            pad_token_id=task.pad_id,
        )
        tokens.append(np.asarray(out.tokens)[: len(chunk)])
        mask.append(np.asarray(out.mask)[: len(chunk)])
    shape = (len(problems), num_samples, task.answer_length)
    tokens = np.concatenate(tokens).reshape(shape)
    mask = np.concatenate(mask).reshape(shape)
    tokens = np.where(mask, tokens, task.pad_id)
    return Samples(problems, tokens, mask, task.judge(problems, tokens, mask))


class Evaluation(NamedTuple):
    """Greedy decoding judged on a set of problems.

    Attributes:
      score: percent of problems answered exactly right (0-100): the judge score.
      credit: mean partial credit, in percent (0-100).
      samples: the greedy completions (``K = 1``) and their judgement.
    """

    score: float
    credit: float
    samples: Samples


def evaluate(
    model: Transformer,
    task: Task,
    problems: np.ndarray,
    *,
    batch_size: int = 1024,
    progress: bool = True,
) -> Evaluation:
    """Greedy decoding of every problem, judged: the judge score an experiment reports."""
    out = sample(
        model,
        task,
        problems,
        num_samples=1,
        temperature=0.0,
        batch_size=batch_size,
        progress=progress,
        desc="evaluating",
    )
    return Evaluation(
        score=100.0 * float(out.judgement.correct.mean()),
        credit=100.0 * float(out.judgement.credit.mean()),
        samples=out,
    )


@dataclasses.dataclass(frozen=True)
class PairStats:
    """What :func:`preference_pairs` or :func:`ranked_lists` made of the judged samples.

    Attributes:
      prompts: problems judged.
      examples: examples made (one per prompt at most).
      ties: prompts skipped because every sample got the same credit (within ``min_gap``).
      all_correct: of the ties, prompts where every sample was right.
      mean_credit: mean credit of all samples (0-1).
      fraction_correct: fraction of all samples exactly right.
    """

    prompts: int
    examples: int
    ties: int
    all_correct: int
    mean_credit: float
    fraction_correct: float


def _stats(samples: Samples, kept: np.ndarray) -> PairStats:
    judged = samples.judgement
    tie = ~kept
    return PairStats(
        prompts=len(kept),
        examples=int(kept.sum()),
        ties=int(tie.sum()),
        all_correct=int((tie & judged.correct.all(-1)).sum()),
        mean_credit=float(judged.credit.mean()),
        fraction_correct=float(judged.correct.mean()),
    )


def _response(samples: Samples, i: int, k: int) -> np.ndarray:
    return samples.tokens[i, k][samples.mask[i, k]]


def best_and_worst(
    credit: np.ndarray, *, min_gap: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``credit [n, K]``: the best and worst sample and whether they form a pair.

    Returns ``(best, worst, kept)``, each ``[n]``: the first highest- and first lowest-credit
    sample, and ``kept`` False where their credits differ by less than ``min_gap`` (a tie).
    """
    credit = np.asarray(credit)
    best, worst = credit.argmax(-1), credit.argmin(-1)
    rows = np.arange(len(credit))
    return best, worst, credit[rows, best] - credit[rows, worst] >= min_gap


def preference_pairs(
    task: Task, samples: Samples, *, min_gap: float = 1e-6
) -> tuple[list[TokenizedExample], PairStats]:
    """Best-versus-worst pairs: per prompt, its highest-credit sample over its lowest.

    A prompt whose best and worst credits differ by less than ``min_gap`` gives no pair (a
    tie, counted in the stats). Features carry ``scores = (best, worst)`` credits.
    """
    credit = samples.judgement.credit
    best, worst, kept = best_and_worst(credit, min_gap=min_gap)
    prompts = task.prompts(samples.problems)
    examples = [
        tokenized_example(
            "pairwise",
            prompts[i],
            [_response(samples, i, best[i]), _response(samples, i, worst[i])],
            strength=None,
            margin=None,
            scores=(float(credit[i, best[i]]), float(credit[i, worst[i]])),
        )
        for i in np.flatnonzero(kept)
    ]
    return examples, _stats(samples, kept)


def ranked_lists(
    task: Task, samples: Samples, *, min_gap: float = 1e-6
) -> tuple[list[TokenizedExample], PairStats]:
    """One ranked example per prompt: all K samples with their credits as ``scores``.

    Prompts whose credits all lie within ``min_gap`` of each other are ties and give no
    example (a list with one label carries no preference).
    """
    credit = samples.judgement.credit
    kept = credit.max(-1) - credit.min(-1) >= min_gap
    prompts = task.prompts(samples.problems)
    k = credit.shape[1]
    examples = [
        tokenized_example(
            "ranked",
            prompts[i],
            [_response(samples, i, j) for j in range(k)],
            scores=tuple(float(c) for c in credit[i]),
            ranks=None,
        )
        for i in np.flatnonzero(kept)
    ]
    return examples, _stats(samples, kept)
