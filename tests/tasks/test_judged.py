"""Sampling, greedy evaluation and preference data from judged samples."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxpref.data import BatchIterator
from jaxpref.models import Transformer
from jaxpref.tasks import arithmetic as A
from jaxpref.tasks import judged as J


def judged_samples(task, credits_pattern):
    """Samples whose credits follow ``credits_pattern`` [n, K] (in quarters)."""
    n, k = credits_pattern.shape
    problems = np.array([[7, 45]] * n)
    answer = task.answers(problems[:1])[0]
    tokens = np.tile(answer, (n, k, 1))
    wrong = int(A.encode("9")[0])
    for i in range(n):
        for j in range(k):
            tokens[i, j, : 4 - credits_pattern[i, j]] = wrong  # the answer has no 9
    mask = np.ones_like(tokens, bool)
    return J.Samples(problems, tokens, mask, task.judge(problems, tokens, mask))


def test_pairs_are_best_over_worst_and_ties_are_counted():
    task = A.Addition(num_digits=2)
    pattern = np.array([[4, 1, 3], [2, 2, 2], [4, 4, 4], [0, 3, 1]])
    samples = judged_samples(task, pattern)
    pairs, stats = J.preference_pairs(task, samples)
    assert (stats.prompts, stats.examples, stats.ties, stats.all_correct) == (4, 2, 2, 1)
    assert stats.mean_credit == pytest.approx(pattern.mean() / 4)
    assert [p.features["scores"] for p in pairs] == [(1.0, 0.25), (0.75, 0.0)]
    for pair, (i, best, worst) in zip(pairs, [(0, 0, 1), (3, 1, 0)], strict=True):
        assert pair.kind == "pairwise"
        chosen, rejected = pair.input_ids
        np.testing.assert_array_equal(chosen[task.prompt_length :], samples.tokens[i, best])
        np.testing.assert_array_equal(rejected[task.prompt_length :], samples.tokens[i, worst])
    lists, list_stats = J.ranked_lists(task, samples)
    assert list_stats == stats
    assert [x.features["scores"] for x in lists] == [(1.0, 0.25, 0.75), (0.0, 0.75, 0.25)]
    assert all(x.kind == "ranked" and x.num_sequences == 3 for x in lists)
    batch = next(iter(BatchIterator(lists, batch_size=2, seed=0)))
    assert batch["input_ids"].shape[:2] == (2, 3) and "scores" in batch


def test_sampling_and_greedy_evaluation_of_a_model():
    task = A.Addition(num_digits=2)
    model = Transformer(task.model_config(), rngs=nnx.Rngs(0))
    problems = np.array([[0, 0], [99, 99], [7, 45], [50, 50], [12, 34]])  # 10 rows: 8 + 2 padded
    samples = J.sample(
        model,
        task,
        problems,
        num_samples=2,
        temperature=1.0,
        rng=jax.random.key(0),
        batch_size=8,
        progress=False,
    )
    assert samples.tokens.shape == samples.mask.shape == (5, 2, task.answer_length)
    assert samples.mask[..., 0].all()
    assert (samples.tokens[~samples.mask] == A.PAD).all()
    np.testing.assert_array_equal(
        samples.judgement.credit, task.judge(problems, samples.tokens).credit
    )
    out = J.evaluate(model, task, problems, batch_size=8, progress=False)
    again = J.evaluate(model, task, problems, batch_size=8, progress=False)
    np.testing.assert_array_equal(out.samples.tokens, again.samples.tokens)  # greedy
    assert 0 <= out.score <= out.credit <= 100
    assert out.score == 100 * out.samples.judgement.correct.mean()
    with pytest.raises(ValueError, match="rng"):
        J.sample(model, task, problems, num_samples=1, temperature=1.0)


def test_sampling_compiles_once_per_batch_size():
    from jaxpref.models import sampling as sampling_module

    task = A.Addition(num_digits=2)
    key = jax.random.key(1)
    problems = np.array([[1, 2], [3, 4], [5, 6]])
    model = Transformer(task.model_config(), rngs=nnx.Rngs(0))
    J.sample(
        model, task, problems, num_samples=3, temperature=1.0, rng=key, batch_size=4, progress=False
    )
    size = sampling_module._generate._cache_size()
    other = Transformer(task.model_config(), rngs=nnx.Rngs(1))  # a new policy, same shapes
    J.sample(
        other,
        task,
        problems[:1],
        num_samples=2,
        temperature=0.7,
        rng=key,
        batch_size=4,
        progress=False,
    )
    assert sampling_module._generate._cache_size() == size


def test_best_and_worst_picks_first_extremes_and_flags_ties():
    credit = np.array(
        [
            [0.2, 0.9, 0.9, 0.1],  # best: first of the two 0.9s; worst: the 0.1
            [0.5, 0.5, 0.5, 0.5],  # all tie
            [0.3, 0.3 + 1e-7, 0.3, 0.3],  # a gap below min_gap is a tie
            [1.0, 0.0, 0.4, 0.0],
        ]
    )
    best, worst, kept = J.best_and_worst(credit, min_gap=1e-6)
    assert best.tolist() == [1, 0, 1, 0] and worst.tolist() == [3, 0, 0, 1]
    assert kept.tolist() == [True, False, False, True]
    assert J.best_and_worst(credit, min_gap=1e-8)[2].tolist() == [True, False, True, True]
