"""TFDS feature layouts for records, and the conversions between records and examples.

One layout per record kind; every text is a ``tfds.features.Text`` (decoded as UTF-8 bytes):

* all kinds: ``prompt`` (plain-text prompt, ``""`` for a conversation), ``prompt_messages``
  (a sequence of ``{"role", "content"}``; empty for plain text) and ``source``.
* pairwise: ``chosen``, ``rejected``; float32 ``strength``, ``margin``, ``chosen_score``,
  ``rejected_score`` (NaN when absent: readers never let NaN through as a value);
  ``rationale`` (``""`` when absent).
* ranked: ``responses`` (sequence of text), ``scores`` (float32) and ``ranks`` (int32),
  each empty when absent.
* unpaired: ``completion`` and a bool ``desirable``.

A conversational record's responses are stored as text: each must be exactly one assistant
message (true of every format the builders read); :func:`example_to_record` turns them back
into one-message conversations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxpref.data.records import (
    DataError,
    Message,
    PairwiseRecord,
    RankedRecord,
    Record,
    RecordKind,
    Text,
    UnpairedRecord,
    is_conversation,
)

_OPTIONAL_FLOATS = ("strength", "margin", "chosen_score", "rejected_score")


def features_for(kind: RecordKind) -> tfds.features.FeaturesDict:
    """The ``FeaturesDict`` holding records of ``kind``."""
    text = tfds.features.Text
    common = {
        "prompt": text(),
        "prompt_messages": tfds.features.Sequence({"role": text(), "content": text()}),
        "source": text(),
    }
    if kind == "pairwise":
        specific = {"chosen": text(), "rejected": text(), "rationale": text()}
        specific |= {name: np.float32 for name in _OPTIONAL_FLOATS}
    elif kind == "ranked":
        specific = {
            "responses": tfds.features.Sequence(text()),
            "scores": tfds.features.Sequence(np.float32),
            "ranks": tfds.features.Sequence(np.int32),
        }
    elif kind == "unpaired":
        specific = {"completion": text(), "desirable": np.bool_}
    else:
        raise ValueError(f"unknown record kind {kind!r}")
    return tfds.features.FeaturesDict(common | specific)


def _response_text(response: Text, field: str) -> str:
    if not is_conversation(response):
        return response
    if len(response) != 1 or response[0].role != "assistant":
        raise DataError(
            f"a TFDS example holds a response as one assistant message, got {len(response)} "
            "messages",
            field=field,
            reason="unsupported",
        )
    return response[0].content


def record_to_example(record: Record, *, source: str | None = None) -> dict[str, Any]:
    """The TFDS example for ``record`` (``source`` overrides ``record.source``).

    Raises:
        DataError: ``reason="unsupported"`` for a conversational response that is not a
            single assistant message.
    """
    conversational = is_conversation(record.prompt)
    messages = (
        [{"role": m.role, "content": m.content} for m in record.prompt] if conversational else []
    )
    example: dict[str, Any] = {
        "prompt": "" if conversational else record.prompt,
        "prompt_messages": messages,
        "source": (source if source is not None else record.source) or "",
    }
    if isinstance(record, PairwiseRecord):
        example["chosen"] = _response_text(record.chosen, "chosen")
        example["rejected"] = _response_text(record.rejected, "rejected")
        example["rationale"] = record.rationale or ""
        for name in _OPTIONAL_FLOATS:
            value = getattr(record, name)
            example[name] = math.nan if value is None else value
    elif isinstance(record, RankedRecord):
        example["responses"] = [
            _response_text(r, f"responses[{i}]") for i, r in enumerate(record.responses)
        ]
        example["scores"] = list(record.scores or ())
        example["ranks"] = list(record.ranks or ())
    else:
        example["completion"] = _response_text(record.completion, "completion")
        example["desirable"] = record.desirable
    return example


def _str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def example_to_record(example: Mapping[str, Any]) -> Record:
    """The record stored in a decoded TFDS example (as returned by ``tfds.data_source``).

    The kind is read off the fields (``chosen`` -> pairwise, ``responses`` -> ranked,
    ``completion`` -> unpaired).
    """
    messages = example["prompt_messages"]
    roles, contents = list(messages["role"]), list(messages["content"])
    conversational = bool(roles)
    prompt: Text
    if conversational:
        prompt = tuple(Message(_str(r), _str(c)) for r, c in zip(roles, contents, strict=True))
    else:
        prompt = _str(example["prompt"])

    def response(value: Any) -> Text:
        text = _str(value)
        return (Message("assistant", text),) if conversational else text

    source = _str(example["source"]) or None
    if "chosen" in example:
        floats = {}
        for name in _OPTIONAL_FLOATS:
            value = float(example[name])
            floats[name] = None if math.isnan(value) else value
        return PairwiseRecord(
            prompt,
            response(example["chosen"]),
            response(example["rejected"]),
            rationale=_str(example["rationale"]) or None,
            source=source,
            **floats,
        )
    if "responses" in example:
        scores = tuple(float(s) for s in example["scores"])
        ranks = tuple(int(r) for r in example["ranks"])
        return RankedRecord(
            prompt,
            tuple(response(r) for r in example["responses"]),
            scores=scores or None,
            ranks=ranks or None,
            source=source,
        )
    return UnpairedRecord(
        prompt, response(example["completion"]), bool(example["desirable"]), source=source
    )


def record_dataset(source: Sequence[Mapping[str, Any]]) -> Any:
    """A ``grain.MapDataset`` of records over a TFDS data source (or any example sequence).

    Args:
        source: e.g. ``tfds.data_source("jaxpref_synthetic/pairwise", split="train")``.

    Returns:
        ``grain.MapDataset.source(source).map(example_to_record)``: random access, and the
        usual grain ``shuffle`` / ``batch`` / ``to_iter_dataset`` chain.
    """
    import grain

    return grain.MapDataset.source(source).map(example_to_record)
