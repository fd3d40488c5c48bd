"""Fixed-shape batches of tokenised examples: length buckets, an explicit item axis, packing.

A batch is a dict of NumPy arrays. Token arrays have an explicit axis for the responses of
one example, never an implicit ``batch // 2`` split:

================  ==================  =======  ============================================
key               shape               dtype    meaning
================  ==================  =======  ============================================
input_ids         ``[B, I, T]``       int32    prompt + response tokens, ``pad_id`` after
targets           ``[B, I, T]``       int32    ``input_ids`` shifted left by one (see below)
loss_mask         ``[B, I, T]``       bool     True where ``targets`` is a trained response
                                               token
attention_mask    ``[B, I, T]``       bool     True on real (non-padding) input tokens
positions         ``[B, I, T]``       int32    0, 1, ... per sequence (per segment if packed)
segment_ids       ``[B, I, T]``       int32    packed only: 1, 2, ... per segment, 0 = padding
example_index     ``[B]`` / ``[B,S]`` int32    position in the dataset, -1 for padding
example_mask      ``[B]`` / ``[B,S]`` bool     True for real examples
================  ==================  =======  ============================================

``I`` is 2 for pairs (index 0 = chosen, 1 = rejected), ``K`` for ranked lists (the
records' response order; shorter lists are padded and ``item_mask [B, K]`` marks the real
responses) and absent for unpaired (KTO/SFT) data: ``[B, T]``. ``T`` is a length bucket
(:func:`length_buckets`), so a run compiles at most one shape per bucket.

Shift convention (the one :mod:`jaxpref.logprobs` uses): ``targets[..., t] =
input_ids[..., t + 1]``, the token that ``logits[..., t, :]`` predicts when the model runs on
``input_ids``; the last token of each sequence has target ``pad_id`` and ``loss_mask`` False.
So ``sequence_logps(model(input_ids), targets, where=loss_mask)`` is ``[B, I]``.

Per-example values, where the dataset has them (a key is present for every batch of a
dataset if any of its records has the value; a missing value is NaN, or -1 for ranks):
pairs ``strength [B]``, ``margin [B]``, ``scores [B, 2]`` (chosen, rejected); lists
``scores [B, K]``, ``ranks [B, K]``, ``item_mask [B, K]``; unpaired ``desirable [B]``.

Packing (``max_segments=S``) places several examples in one row: the responses of an
example go to the same segment number in each item row (chosen sequences packed along row
``[b, 0]``, rejected along ``[b, 1]``); ``segment_ids`` number them from 1, ``positions``
restart at 0 in each segment, and every per-example array gains a segment axis after the
batch axis (``example_index [B, S]``, ``scores [B, S, 2]``). The model must restrict
attention to its segment (``segment_ids`` equal), and per-example log-probs are sums over
the tokens of a segment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from jaxpref.data.records import RecordKind
from jaxpref.data.tokenize import TokenizedExample

__all__ = [
    "TOKEN_KEYS",
    "batch_features",
    "bucket_length",
    "collate",
    "length_buckets",
]

#: The keys of the ``[B, (I,) T]`` token arrays (``segment_ids`` only when packed).
TOKEN_KEYS = ("input_ids", "targets", "loss_mask", "attention_mask", "positions", "segment_ids")

# name -> (dtype, per item, fill value) of the per-example values of each record kind.
_FEATURES: dict[str, dict[str, tuple[Any, bool, Any]]] = {
    "pairwise": {
        "strength": (np.float32, False, np.nan),
        "margin": (np.float32, False, np.nan),
        "scores": (np.float32, True, np.nan),
    },
    "ranked": {"scores": (np.float32, True, np.nan), "ranks": (np.int32, True, -1)},
    "unpaired": {"desirable": (np.bool_, False, False)},
}


def length_buckets(max_length: int, *, min_length: int = 64) -> tuple[int, ...]:
    """Powers of two from ``min_length`` below ``max_length``, then ``max_length``.

    >>> length_buckets(1000)
    (64, 128, 256, 512, 1000)
    >>> length_buckets(40)
    (40,)
    """
    if max_length < 1 or min_length < 1:
        raise ValueError(f"lengths must be positive, got {max_length=}, {min_length=}")
    out, size = [], min_length
    while size < max_length:
        out.append(size)
        size *= 2
    return (*out, max_length)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket ``>= length``; raises ``ValueError`` if none is."""
    for size in sorted(buckets):
        if size >= length:
            return int(size)
    raise ValueError(
        f"a sequence of {length} tokens is longer than the largest bucket {max(buckets)}; "
        "truncate it (TokenizeConfig.max_length) or add a larger bucket"
    )


def batch_features(kind: RecordKind, examples: Iterable[TokenizedExample]) -> tuple[str, ...]:
    """The per-example value keys batches of this dataset carry (those any example has)."""
    names = _FEATURES[kind]
    present = {"desirable"} if kind == "unpaired" else set()
    for example in examples:
        present.update(k for k, v in example.features.items() if v is not None)
        if present >= names.keys():
            break
    return tuple(k for k in names if k in present)


def _feature_values(value: Any, per_item: bool, size: int, fill: Any) -> Any:
    if not per_item:
        return fill if value is None else value
    values = [fill if v is None else v for v in (value or ())]
    return values + [fill] * (size - len(values))


def collate(
    rows: Sequence[Sequence[tuple[int, TokenizedExample]]],
    *,
    kind: RecordKind,
    length: int,
    num_items: int,
    features: Sequence[str] = (),
    pad_id: int = 0,
    max_segments: int | None = None,
) -> dict[str, np.ndarray]:
    """Lays out rows of examples as one fixed-shape batch (layout in the module docstring).

    Args:
      rows: ``B`` rows, each a list of ``(dataset_index, example)``: at most one example per
        row unless packing, at most ``max_segments`` when packing; an empty row is padding.
      kind: the examples' record kind (``"unpaired"`` drops the item axis).
      length: ``T``; every example's sequences must fit (a packed row's sum of them).
      num_items: ``I``: 2 for pairs, the list size ``K`` for ranked lists, 1 for unpaired.
      features: per-example value keys to include (:func:`batch_features`).
      pad_id: token id of padding (inputs and targets).
      max_segments: None for one example per row; ``S`` to pack.

    Returns:
      The batch: a dict of NumPy arrays.
    """
    packed = max_segments is not None
    b, items, t = len(rows), num_items, length
    segments = max_segments if packed else 1
    input_ids = np.full((b, items, t), pad_id, np.int32)
    targets = np.full((b, items, t), pad_id, np.int32)
    loss_mask = np.zeros((b, items, t), bool)
    attention_mask = np.zeros((b, items, t), bool)
    positions = np.zeros((b, items, t), np.int32)
    segment_ids = np.zeros((b, items, t), np.int32)
    example_index = np.full((b, segments), -1, np.int32)
    item_mask = np.zeros((b, segments, items), bool)
    specs = {name: _FEATURES[kind][name] for name in features}
    values = {
        name: np.full((b, segments, items) if per_item else (b, segments), fill, dtype)
        for name, (dtype, per_item, fill) in specs.items()
    }
    for row, examples in enumerate(rows):
        if len(examples) > segments:
            raise ValueError(f"row {row} holds {len(examples)} examples, at most {segments}")
        fill = np.zeros(items, int)
        for seg, (index, example) in enumerate(examples):
            if example.num_sequences > items:
                raise ValueError(
                    f"example {index} has {example.num_sequences} responses, more than {items}"
                )
            example_index[row, seg] = index
            for i, (ids, mask) in enumerate(
                zip(example.input_ids, example.response_mask, strict=True)
            ):
                n, start = len(ids), fill[i]
                if start + n > t:
                    raise ValueError(f"example {index} does not fit a row of length {t}")
                span = slice(start, start + n)
                input_ids[row, i, span] = ids
                targets[row, i, start : start + n - 1] = ids[1:]
                loss_mask[row, i, start : start + n - 1] = mask[1:]
                attention_mask[row, i, span] = True
                positions[row, i, span] = np.arange(n)
                segment_ids[row, i, span] = seg + 1
                item_mask[row, seg, i] = True
                fill[i] += n
            for name, (_, per_item, fill_value) in specs.items():
                value = example.features.get(name)
                values[name][row, seg] = _feature_values(value, per_item, items, fill_value)
    batch = {
        "input_ids": input_ids,
        "targets": targets,
        "loss_mask": loss_mask,
        "attention_mask": attention_mask,
        "positions": positions,
    }
    if packed:
        batch["segment_ids"] = segment_ids
    batch["example_index"] = example_index
    batch["example_mask"] = example_index >= 0
    if kind == "ranked":
        batch["item_mask"] = item_mask
    batch.update(values)
    if kind == "unpaired":  # no item axis
        for key in TOKEN_KEYS:
            if key in batch:
                batch[key] = batch[key][:, 0]
    if not packed:  # no segment axis
        for key in ("example_index", "example_mask", "item_mask", *values):
            if key in batch:
                batch[key] = batch[key][:, 0]
    return batch
