"""Record-level utilities for experiments: pairs from ranked lists, oracle labels, label noise.

* :func:`pairs_from_ranked`: :class:`RankedRecord` -> :class:`PairwiseRecord` with the
  strategies of :func:`jaxpref.losses.list_pairs` (all, best-vs-rest, adjacent), optionally
  in the Curry-DPO curriculum order (largest label gap, i.e. easiest, first).
* :func:`oracle_pairs`: labels two responses with a reward function (chosen = higher
  reward, or a Bradley-Terry sample of the label with a seed); ties are skipped and counted.
* :func:`inject_label_noise`: flips an exact fraction of pair labels (or each with a
  probability), chosen by a seed, and says which were flipped.

>>> from jaxpref.data.records import RankedRecord
>>> ranked = RankedRecord("Q", ("a", "b", "c"), scores=(1.0, 3.0, 1.0))
>>> out = pairs_from_ranked([ranked], strategy="all")
>>> [(p.chosen, p.rejected) for p in out.pairs], out.ties
([('b', 'a'), ('b', 'c')], 1)
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np

from jaxpref.data.records import DataError, PairwiseRecord, RankedRecord, Text
from jaxpref.losses import pairs as _pairs

__all__ = [
    "NoisyLabels",
    "OracleLabels",
    "RankedPairs",
    "inject_label_noise",
    "oracle_pairs",
    "pairs_from_ranked",
]


class RankedPairs(NamedTuple):
    """Pairs made from ranked lists; arrays are ``[num_pairs]``.

    Attributes:
      pairs: the pairwise records (chosen = higher label; scores copied when known).
      record_index: int64 position of each pair's ranked record in the input.
      gap: float64 label gap ``label[chosen] - label[rejected]`` (> 0); labels are the
        scores, or minus the ranks when a record has no scores.
      stage: int64 Curry-DPO stage of the pair within its own prompt: 0 for the largest
        gap (easiest), 1 for the next, ... (train stage ``t`` in iteration ``t`` for the
        iterative variant).
      ties: number of pair slots dropped because their two labels tie.
    """

    pairs: list[PairwiseRecord]
    record_index: np.ndarray
    gap: np.ndarray
    stage: np.ndarray
    ties: int


def _labels(record: RankedRecord, position: int) -> np.ndarray:
    if record.scores is not None:
        values = record.scores
    elif record.ranks is not None:
        values = tuple(-r for r in record.ranks)
    else:
        raise DataError(
            "ranked record without scores or ranks", path=record.source, reason="no_labels"
        )
    if len(values) != len(record.responses):
        raise DataError(
            f"{len(values)} labels for {len(record.responses)} responses (record {position})",
            path=record.source,
        )
    return np.asarray(values, np.float64)


def pairs_from_ranked(
    records: Iterable[RankedRecord],
    *,
    strategy: str = "all",
    order: Literal["dataset", "curriculum"] = "dataset",
) -> RankedPairs:
    """Turns ranked lists into preference pairs (a tied pair forms no pair and is counted).

    The pair slots and their order within a list are :func:`jaxpref.losses.list_pairs`'s
    (computed by it, on all lists of one size at once). Labels are compared exactly
    (float64): only equal labels tie.

    Args:
      records: ranked records (scores, or ranks when a record has no scores).
      strategy: ``"all"``, ``"best_vs_rest"`` or ``"adjacent"``
        (:data:`jaxpref.losses.PAIR_STRATEGIES`).
      order: ``"dataset"``: by record, then slot; ``"curriculum"``: all pairs sorted by
        label gap, largest (easiest) first, a stable sort (Curry-DPO over the dataset).

    Returns:
      A :class:`RankedPairs`.

    References:
      Pattnaik et al., Curry-DPO: Enhancing Alignment using Curriculum Learning & Ranked
      Preferences, 2024, arXiv:2403.07230.
    """
    if order not in ("dataset", "curriculum"):
        raise ValueError(f"order must be 'dataset' or 'curriculum', got {order!r}")
    _pairs.num_pairs(2, strategy)  # validates the strategy
    records = list(records)
    labels = [_labels(r, i) for i, r in enumerate(records)]
    by_size: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_size[len(y)].append(i)
    # slots[i] = (chosen, rejected, valid, gap, stage) arrays of record i's pair slots.
    slots: dict[int, tuple[np.ndarray, ...]] = {}
    for size, members in by_size.items():
        if size < 2:
            for i in members:
                slots[i] = (np.zeros(0, np.int64),) * 5
            continue
        # Dense ranks keep the order and the ties of the float64 labels exactly in float32.
        y = np.stack([np.unique(labels[i], return_inverse=True)[1] for i in members])
        lp = _pairs.list_pairs(y.astype(np.float32), strategy=strategy)
        chosen, rejected, where = (np.asarray(a) for a in lp)
        exact = np.stack([labels[i] for i in members])
        gaps = np.take_along_axis(exact, chosen, -1) - np.take_along_axis(exact, rejected, -1)
        gaps = np.where(where, gaps, 0.0)
        stage_order = np.asarray(_pairs.curriculum_order(gaps.astype(np.float32), where=where))
        stage = np.argsort(stage_order, axis=-1, kind="stable")
        for row, i in enumerate(members):
            slots[i] = (chosen[row], rejected[row], where[row], gaps[row], stage[row])
    pairs, index, gap, stage_out, ties = [], [], [], [], 0
    for i, record in enumerate(records):
        chosen, rejected, where, gaps, stages = slots[i]
        ties += int(np.sum(~where.astype(bool)))
        for c, r, ok, g, s in zip(chosen, rejected, where, gaps, stages, strict=True):
            if not ok:
                continue
            scores = record.scores
            pairs.append(
                PairwiseRecord(
                    prompt=record.prompt,
                    chosen=record.responses[c],
                    rejected=record.responses[r],
                    chosen_score=None if scores is None else float(scores[c]),
                    rejected_score=None if scores is None else float(scores[r]),
                    source=record.source,
                )
            )
            index.append(i)
            gap.append(float(g))
            stage_out.append(int(s))
    index_a, gap_a = np.asarray(index, np.int64), np.asarray(gap, np.float64)
    stage_a = np.asarray(stage_out, np.int64)
    if order == "curriculum" and pairs:
        perm = np.argsort(-gap_a, kind="stable")
        pairs = [pairs[j] for j in perm]
        index_a, gap_a, stage_a = index_a[perm], gap_a[perm], stage_a[perm]
    return RankedPairs(pairs, index_a, gap_a, stage_a, ties)


class OracleLabels(NamedTuple):
    """Pairs labelled by a reward function; arrays are ``[num_pairs]``.

    Attributes:
      pairs: the labelled pairs, with ``chosen_score`` / ``rejected_score`` the rewards.
      index: int64 position of each pair's candidate in the input.
      against_reward: bool, True where the (sampled) label prefers the lower reward.
      ties: number of candidates skipped because their rewards tie.
    """

    pairs: list[PairwiseRecord]
    index: np.ndarray
    against_reward: np.ndarray
    ties: int


Candidate = tuple[Text, Text, Text] | PairwiseRecord


def oracle_pairs(
    candidates: Iterable[Candidate],
    reward_fn: Callable[[Text, Text], float],
    *,
    sample: bool = False,
    beta: float = 1.0,
    seed: int = 0,
    tie_tolerance: float = 0.0,
) -> OracleLabels:
    r"""Labels pairs of responses with a reward function (oracle labelling).

    With ``sample=False`` the response with the higher reward is chosen. With
    ``sample=True`` the label is drawn from the Bradley-Terry model

    .. math::

        P(a \succ b) = \sigma(\beta (r(x, a) - r(x, b)))

    with one uniform draw per candidate from ``np.random.default_rng(seed)``, in input
    order. Candidates whose rewards differ by at most ``tie_tolerance`` are skipped (in
    both modes) and counted.

    Args:
      candidates: ``(prompt, response_a, response_b)`` triples, or pairwise records to
        relabel (their chosen/rejected are the two responses; only ``source`` is kept).
      reward_fn: ``reward_fn(prompt, response) -> float``.
      sample: draw the label from the Bradley-Terry model instead of taking the argmax.
      beta: inverse temperature of the Bradley-Terry model.
      seed: seed of the draws.
      tie_tolerance: reward differences up to this are ties.

    Returns:
      An :class:`OracleLabels`.

    >>> out = oracle_pairs([("Q", "short", "longer answer"), ("Q", "ab", "cd")],
    ...                    lambda prompt, response: len(response))
    >>> [(p.chosen, p.rejected) for p in out.pairs], out.ties
    ([('longer answer', 'short')], 1)
    """
    items = list(candidates)
    uniform = np.random.default_rng(seed).random(len(items))
    pairs, index, against, ties = [], [], [], 0
    for i, item in enumerate(items):
        if isinstance(item, PairwiseRecord):
            prompt, a, b, source = item.prompt, item.chosen, item.rejected, item.source
        else:
            (prompt, a, b), source = item, None
        ra, rb = float(reward_fn(prompt, a)), float(reward_fn(prompt, b))
        if not (math.isfinite(ra) and math.isfinite(rb)):
            raise ValueError(f"reward_fn returned a non-finite reward for candidate {i}")
        if abs(ra - rb) <= tie_tolerance:
            ties += 1
            continue
        if sample:
            a_wins = uniform[i] < 0.5 * (1.0 + math.tanh(0.5 * beta * (ra - rb)))  # sigmoid
        else:
            a_wins = ra > rb
        chosen, rejected, rc, rr = (a, b, ra, rb) if a_wins else (b, a, rb, ra)
        pairs.append(
            PairwiseRecord(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                chosen_score=rc,
                rejected_score=rr,
                source=source,
            )
        )
        index.append(i)
        against.append(rc < rr)
    return OracleLabels(pairs, np.asarray(index, np.int64), np.asarray(against, bool), ties)


class NoisyLabels(NamedTuple):
    """Records after label-noise injection.

    Attributes:
      records: the records, flipped ones with chosen and rejected swapped.
      flipped: bool ``[num_records]``, True for the flipped records.
    """

    records: list[PairwiseRecord]
    flipped: np.ndarray


def _flip(record: PairwiseRecord) -> PairwiseRecord:
    return dataclasses.replace(
        record,
        chosen=record.rejected,
        rejected=record.chosen,
        chosen_score=record.rejected_score,
        rejected_score=record.chosen_score,
        strength=None if record.strength is None else 1.0 - record.strength,
        margin=None if record.margin is None else -record.margin,
    )


def inject_label_noise(
    records: Sequence[PairwiseRecord], fraction: float, *, seed: int, exact: bool = True
) -> NoisyLabels:
    """Flips the labels of a fraction of pairs, reproducibly.

    A flip swaps chosen and rejected with everything attached to them: the per-response
    scores move with their responses, ``strength`` becomes ``1 - strength`` and ``margin``
    becomes ``-margin``, so a flipped record states the same facts with the label reversed.
    For a pure label-noise experiment on an objective that reads scores, strength or
    margin, clear those fields first.

    Args:
      records: pairwise records.
      fraction: in ``[0, 1]``.
      seed: chooses the flipped records (same seed, same records).
      exact: flip exactly ``round(fraction * N)`` records (half rounds up), chosen
        uniformly without replacement; False flips each record independently with
        probability ``fraction``.

    Returns:
      A :class:`NoisyLabels`.

    >>> from jaxpref.data.records import PairwiseRecord
    >>> noisy = inject_label_noise([PairwiseRecord("Q", "good", "bad")] * 4, 0.5, seed=0)
    >>> int(noisy.flipped.sum()), sorted(r.chosen for r in noisy.records)
    (2, ['bad', 'bad', 'good', 'good'])
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    n = len(records)
    rng = np.random.default_rng(seed)
    flipped = np.zeros(n, bool)
    if exact:
        flipped[rng.choice(n, size=math.floor(fraction * n + 0.5), replace=False)] = True
    else:
        flipped = rng.random(n) < fraction
    out = [_flip(r) if f else r for r, f in zip(records, flipped, strict=True)]
    return NoisyLabels(out, flipped)
