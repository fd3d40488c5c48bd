"""Record-level pair utilities: pairs from ranked lists, oracle labels, label noise."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from jaxpref.data.pairs import inject_label_noise, oracle_pairs, pairs_from_ranked
from jaxpref.data.records import DataError, PairwiseRecord, RankedRecord


def _expected_pairs(labels, strategy):
    """Independent enumeration: (chosen, rejected) index pairs and the number of ties."""
    k = len(labels)
    order = sorted(range(k), key=lambda i: -labels[i])  # stable: ties keep input order
    if strategy == "all":
        slots = list(itertools.combinations(range(k), 2))
    elif strategy == "best_vs_rest":
        slots = [(order[0], j) for j in order[1:]]
    else:
        slots = list(itertools.pairwise(order))
    pairs, ties = [], 0
    for i, j in slots:
        if labels[i] == labels[j]:
            ties += 1
        else:
            pairs.append((i, j) if labels[i] > labels[j] else (j, i))
    return pairs, ties


LISTS = [
    (3.0, 5.0, 2.0, 4.0),
    (1.0, 1.0, 0.0),
    (2.0, 2.0, 2.0),
    (0.5, 1.5),
    (4.0, 1.0, 4.0, 2.0, 3.0),
]


@pytest.mark.parametrize("strategy", ["all", "best_vs_rest", "adjacent"])
def test_pairs_from_ranked_matches_an_enumeration(strategy):
    records = [
        RankedRecord(f"Q{n}", tuple(f"r{n}.{i}" for i in range(len(y))), scores=y, source=f"f:{n}")
        for n, y in enumerate(LISTS)
    ]
    out = pairs_from_ranked(records, strategy=strategy)
    want, ties, index = [], 0, []
    for n, y in enumerate(LISTS):
        pairs, t = _expected_pairs(y, strategy)
        ties += t
        want += [(f"Q{n}", f"r{n}.{c}", f"r{n}.{r}", y[c], y[r]) for c, r in pairs]
        index += [n] * len(pairs)
    got = [(p.prompt, p.chosen, p.rejected, p.chosen_score, p.rejected_score) for p in out.pairs]
    assert got == want
    assert out.ties == ties
    np.testing.assert_array_equal(out.record_index, index)
    np.testing.assert_allclose(out.gap, [w[3] - w[4] for w in want])
    assert all(p.source == f"f:{i}" for p, i in zip(out.pairs, index, strict=True))


def test_ties_form_no_pair_and_are_counted():
    out = pairs_from_ranked([RankedRecord("Q", ("a", "b", "c"), scores=(1.0, 1.0, 1.0))])
    assert out.pairs == [] and out.ties == 3


def test_ranks_are_used_when_there_are_no_scores():
    record = RankedRecord("Q", ("a", "b", "c"), ranks=(2, 0, 1))
    out = pairs_from_ranked([record], strategy="adjacent")
    assert [(p.chosen, p.rejected) for p in out.pairs] == [("b", "c"), ("c", "a")]
    assert out.pairs[0].chosen_score is None
    np.testing.assert_array_equal(out.gap, [1.0, 1.0])
    with pytest.raises(DataError, match="without scores or ranks"):
        pairs_from_ranked([RankedRecord("Q", ("a", "b"), source="x:1")])


def test_curriculum_orders_easy_first_and_stages_within_a_prompt():
    records = [
        RankedRecord("A", ("a0", "a1", "a2", "a3"), scores=(4.0, 1.0, 3.0, 0.0)),
        RankedRecord("B", ("b0", "b1"), scores=(0.0, 10.0)),
    ]
    out = pairs_from_ranked(records, strategy="best_vs_rest", order="curriculum")
    # Gaps: A: best a0 vs a2 (1), a1 (3), a3 (4); B: b1 vs b0 (10). Largest first.
    assert [(p.chosen, p.rejected) for p in out.pairs] == [
        ("b1", "b0"),
        ("a0", "a3"),
        ("a0", "a1"),
        ("a0", "a2"),
    ]
    np.testing.assert_array_equal(out.gap, [10.0, 4.0, 3.0, 1.0])
    np.testing.assert_array_equal(out.record_index, [1, 0, 0, 0])
    np.testing.assert_array_equal(out.stage, [0, 0, 1, 2])
    with pytest.raises(ValueError, match="order"):
        pairs_from_ranked(records, order="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strategy"):
        pairs_from_ranked(records, strategy="nearest")


def _length_reward(prompt, response):
    return float(len(response))


def test_oracle_labels_prefer_the_higher_reward_and_skip_ties():
    candidates = [
        ("Q", "short", "much longer"),
        ("Q", "longer one", "tiny"),
        ("Q", "same", "size"),  # tie
        PairwiseRecord("Q", "ab", "abc", strength=0.9, source="f:4"),  # relabelled
    ]
    out = oracle_pairs(candidates, _length_reward)
    got = [(p.chosen, p.rejected, p.chosen_score, p.rejected_score) for p in out.pairs]
    assert got == [
        ("much longer", "short", 11.0, 5.0),
        ("longer one", "tiny", 10.0, 4.0),
        ("abc", "ab", 3.0, 2.0),
    ]
    assert out.ties == 1
    np.testing.assert_array_equal(out.index, [0, 1, 3])
    assert not out.against_reward.any()
    assert out.pairs[2].source == "f:4" and out.pairs[2].strength is None
    tolerant = oracle_pairs(candidates, _length_reward, tie_tolerance=1.0)
    assert tolerant.ties == 2


def test_bradley_terry_sampling_is_seeded_and_follows_the_model():
    n, beta = 4000, 0.5
    candidates = [("Q", "aaaa", "aa")] * n  # reward gap 2: P(a wins) = sigmoid(1)
    first = oracle_pairs(candidates, _length_reward, sample=True, beta=beta, seed=3)
    again = oracle_pairs(candidates, _length_reward, sample=True, beta=beta, seed=3)
    other = oracle_pairs(candidates, _length_reward, sample=True, beta=beta, seed=4)
    np.testing.assert_array_equal(first.against_reward, again.against_reward)
    assert not np.array_equal(first.against_reward, other.against_reward)
    p_against = 1.0 / (1.0 + math.exp(beta * 2.0))
    rate = first.against_reward.mean()
    assert abs(rate - p_against) < 4 * math.sqrt(p_against * (1 - p_against) / n)
    flipped = first.pairs[int(np.argmax(first.against_reward))]
    assert (flipped.chosen, flipped.chosen_score) == ("aa", 2.0)


def test_label_noise_flips_an_exact_fraction_reproducibly():
    records = [
        PairwiseRecord(f"Q{i}", f"good{i}", f"bad{i}", strength=0.8, margin=1.5,
                       chosen_score=2.0, rejected_score=1.0)
        for i in range(50)
    ]  # fmt: skip
    noisy = inject_label_noise(records, 0.3, seed=0)
    assert noisy.flipped.dtype == bool and int(noisy.flipped.sum()) == 15
    np.testing.assert_array_equal(noisy.flipped, inject_label_noise(records, 0.3, seed=0).flipped)
    assert not np.array_equal(noisy.flipped, inject_label_noise(records, 0.3, seed=1).flipped)
    for before, after, flipped in zip(records, noisy.records, noisy.flipped, strict=True):
        if flipped:
            assert (after.chosen, after.rejected) == (before.rejected, before.chosen)
            assert (after.chosen_score, after.rejected_score) == (1.0, 2.0)
            assert after.strength == pytest.approx(0.2) and after.margin == -1.5
        else:
            assert after is before
    assert int(inject_label_noise(records, 0.0, seed=0).flipped.sum()) == 0
    assert int(inject_label_noise(records, 1.0, seed=0).flipped.sum()) == 50
    assert int(inject_label_noise(records[:5], 0.5, seed=0).flipped.sum()) == 3  # 2.5 -> 3
    with pytest.raises(ValueError, match="fraction"):
        inject_label_noise(records, 1.5, seed=0)


def test_label_noise_bernoulli_mode():
    records = [PairwiseRecord("Q", "a", "b")] * 2000
    noisy = inject_label_noise(records, 0.25, seed=5, exact=False)
    assert abs(noisy.flipped.mean() - 0.25) < 0.04
    np.testing.assert_array_equal(
        noisy.flipped, inject_label_noise(records, 0.25, seed=5, exact=False).flipped
    )


def test_close_scores_are_not_ties():
    record = RankedRecord("Q", ("a", "b"), scores=(1.0, 1.0 + 1e-12))
    out = pairs_from_ranked([record])
    assert [(p.chosen, p.rejected) for p in out.pairs] == [("b", "a")] and out.ties == 0
