"""Row formats: turn one parsed row (a dict) into validated records.

Each format is a small object with the record ``kinds`` it can produce, a ``matches(row)``
test used by auto-detection, and ``parse(row, kind=..., source=..., index=...)`` returning a
list of records (already checked by :func:`~jaxpref.data.validate.validate_record`). Formats,
by name (:data:`FORMATS`):

``standard``
    TRL standard preference rows: ``prompt``, ``chosen``, ``rejected`` strings (kind
    ``"pairwise"``), or ``prompt``, ``completion``, ``label`` (kind ``"unpaired"``).
    Optional pairwise fields: ``strength``, ``margin``, ``chosen_score`` (or
    ``score_chosen``), ``rejected_score`` (or ``score_rejected``), ``rationale``.
``conversational``
    The same fields holding lists of ``{"role", "content"}`` messages (TRL conversational).
``implicit_prompt``
    ``chosen`` and ``rejected`` only (text or messages); the prompt is their common prefix.
    For text the split is moved back to the last whitespace of the common prefix, so the
    prompt ends on a word boundary and each response starts with that whitespace. For
    conversations the prompt is the common leading messages.
``hh_rlhf``
    Anthropic HH-RLHF transcripts: ``chosen``/``rejected`` strings of
    ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` turns. The shared turns become a conversational
    prompt; the final Assistant turns are the two responses.
``ultrafeedback``
    ``instruction`` (or ``prompt``) and ``completions``: a list of
    ``{"response", "overall_score", "fine-grained_score", "annotations"}``. Kind
    ``"ranked"`` keeps every completion with its score; kind ``"pairwise"`` binarises (see
    :class:`UltraFeedbackFormat`).
``shp``
    Stanford SHP rows: ``history``, ``human_ref_A``, ``human_ref_B``, ``labels`` (1 when A
    is preferred), ``score_A``, ``score_B`` -> a pair with both scores.
``jaxpref``
    The record fields themselves: pairwise as ``standard``; ranked ``prompt``,
    ``responses``, ``scores`` and/or ``ranks``; unpaired ``prompt``, ``completion``,
    ``desirable`` (or ``label``). Text or messages in any text field.

``format="auto"`` picks the first of ``shp, ultrafeedback, jaxpref, standard,
conversational, hh_rlhf, implicit_prompt`` whose fields the row has (see each ``matches``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from jaxpref.data.records import (
    RECORD_KINDS,
    DataError,
    Message,
    PairwiseRecord,
    RankedRecord,
    Record,
    RecordKind,
    UnpairedRecord,
)
from jaxpref.data.validate import (
    as_bool,
    as_float,
    as_int,
    as_list,
    as_str,
    as_text,
    check_role_order,
    validate_record,
)


class RowDropped(Exception):
    """Raised by a format to drop a well-formed row by policy (e.g. an UltraFeedback tie).

    Readers always count it under ``reason`` in ``skipped``, with or without
    ``skip_invalid``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def get(row: Mapping[str, Any], key: str, field: str | None = None) -> Any:
    """``row[key]``; a missing or null value raises ``DataError(reason="missing_field")``."""
    value = row.get(key)
    if value is None:
        what = "is null" if key in row else "is missing"
        raise DataError(f"required field {what}", field=field or key, reason="missing_field")
    return value


def _optional(row: Mapping[str, Any], *keys: str) -> tuple[str, Any]:
    for key in keys:
        if row.get(key) is not None:
            return key, row[key]
    return keys[0], None


def _has(row: Mapping[str, Any], *keys: str) -> bool:
    return all(key in row for key in keys)


class Format:
    """Base class: a named row format producing records of some ``kinds``."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[RecordKind, ...]]

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Whether auto-detection should pick this format for ``row``."""
        raise NotImplementedError

    def parse(
        self, row: Mapping[str, Any], *, kind: RecordKind, source: str, index: int
    ) -> list[Record]:
        """Validated records from one row; raises :class:`DataError` or :class:`RowDropped`.

        Args:
            row: the parsed row.
            kind: the record kind wanted (one of ``self.kinds``).
            source: where the row came from (``"file:line"``), stored on each record.
            index: the row's 0-based position in its file (seeds random choices).
        """
        raise NotImplementedError


class _FieldsFormat(Format):
    """``standard`` / ``conversational`` / ``jaxpref``: record fields by name."""

    conversation: ClassVar[bool | None]

    def matches(self, row: Mapping[str, Any]) -> bool:
        pair = _has(row, "prompt", "chosen", "rejected")
        unpaired = _has(row, "prompt", "completion", "label")
        return (pair or unpaired) and isinstance(row["prompt"], list) == self.conversation

    def parse(
        self, row: Mapping[str, Any], *, kind: RecordKind, source: str, index: int
    ) -> list[Record]:
        del index
        prompt = as_text(get(row, "prompt"), "prompt", conversation=self.conversation)

        def text(key: str) -> Any:
            return as_text(get(row, key), key, conversation=self.conversation)

        names: dict[str, str] = {}  # record field -> the key the row used, for errors
        if kind == "pairwise":
            fields = {}
            for name, keys in _PAIR_OPTIONAL.items():
                key, value = _optional(row, *keys)
                if value is not None:
                    if name == "rationale":
                        value = as_str(value, key)
                    else:
                        bounds = {"low": 0.0, "high": 1.0} if name == "strength" else {}
                        value = as_float(value, key, **bounds)
                    names[name] = key
                fields[name] = value
            chosen, rejected = text("chosen"), text("rejected")
            record = PairwiseRecord(prompt, chosen, rejected, source=source, **fields)
        elif kind == "unpaired":
            key, _ = _optional(row, "label", "desirable")
            desirable = as_bool(get(row, key), key)
            record = UnpairedRecord(prompt, text("completion"), desirable, source)
            names["desirable"] = key
        else:
            responses = as_list(get(row, "responses"), "responses")
            record = RankedRecord(
                prompt,
                tuple(
                    as_text(r, f"responses[{i}]", conversation=self.conversation)
                    for i, r in enumerate(responses)
                ),
                scores=_float_tuple(row.get("scores"), "scores"),
                ranks=_int_tuple(row.get("ranks"), "ranks"),
                source=source,
            )
        return [validate_record(record, names=names)]


_PAIR_OPTIONAL = {
    "strength": ("strength",),
    "margin": ("margin",),
    "chosen_score": ("chosen_score", "score_chosen"),
    "rejected_score": ("rejected_score", "score_rejected"),
    "rationale": ("rationale",),
}


def _float_tuple(value: Any, field: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    return tuple(as_float(v, f"{field}[{i}]") for i, v in enumerate(as_list(value, field)))


def _int_tuple(value: Any, field: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    return tuple(as_int(v, f"{field}[{i}]") for i, v in enumerate(as_list(value, field)))


class StandardFormat(_FieldsFormat):
    name = "standard"
    kinds = ("pairwise", "unpaired")
    conversation = False


class ConversationalFormat(_FieldsFormat):
    name = "conversational"
    kinds = ("pairwise", "unpaired")
    conversation = True


class JaxprefFormat(_FieldsFormat):
    name = "jaxpref"
    kinds = RECORD_KINDS
    conversation = None

    def matches(self, row: Mapping[str, Any]) -> bool:
        return "prompt" in row and ("responses" in row or _has(row, "completion", "desirable"))

    def parse(
        self, row: Mapping[str, Any], *, kind: RecordKind, source: str, index: int
    ) -> list[Record]:
        has = "responses" if "responses" in row else "completion" if "completion" in row else None
        row_kind = {"responses": "ranked", "completion": "unpaired"}.get(has, "pairwise")
        if row_kind != kind:
            raise DataError(
                f"the row is a {row_kind} record, not {kind}", field=has, reason="wrong_kind"
            )
        return super().parse(row, kind=kind, source=source, index=index)


class ImplicitPromptFormat(Format):
    name = "implicit_prompt"
    kinds = ("pairwise",)

    def matches(self, row: Mapping[str, Any]) -> bool:
        return _has(row, "chosen", "rejected") and "prompt" not in row

    def parse(
        self, row: Mapping[str, Any], *, kind: RecordKind, source: str, index: int
    ) -> list[Record]:
        del kind, index
        chosen = as_text(get(row, "chosen"), "chosen")
        rejected = as_text(get(row, "rejected"), "rejected", conversation=isinstance(chosen, tuple))
        if chosen == rejected:
            raise DataError(
                "chosen and rejected are identical", field="rejected", reason="identical_responses"
            )
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if isinstance(chosen, str):
            # Back off to a word boundary; the whitespace there starts both responses.
            while n > 0 and not chosen[n - 1].isspace():
                n -= 1
            while n > 0 and chosen[n - 1].isspace():
                n -= 1
        prompt, chosen, rejected = chosen[:n], chosen[n:], rejected[n:]
        if not prompt or (isinstance(prompt, str) and not prompt.strip()):
            raise DataError(
                "chosen and rejected share no prefix to use as the prompt",
                field="chosen",
                reason="no_common_prompt",
            )
        record = PairwiseRecord(prompt, chosen, rejected, source=source)
        return [validate_record(record, names={"prompt": "chosen"})]


_HH_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_turns(transcript: str, field: str) -> tuple[Message, ...]:
    marks = list(_HH_TURN.finditer(transcript))
    if not marks or transcript[: marks[0].start()].strip():
        raise DataError(
            "an HH-RLHF transcript must start with a 'Human:' turn",
            field=field,
            reason="role_order",
        )
    turns = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(transcript)
        content = transcript[mark.end() : end].strip()
        if not content:
            raise DataError(
                f"turn {i} ({mark.group(1)}) is empty", field=field, reason="empty_text"
            )
        turns.append(Message(_HH_ROLES[mark.group(1)], content))
    turns = tuple(turns)
    check_role_order((field, turns))
    if turns[-1].role != "assistant":
        raise DataError(
            "an HH-RLHF transcript must end with an 'Assistant:' turn",
            field=field,
            reason="role_order",
        )
    return turns


class HhRlhfFormat(Format):
    name = "hh_rlhf"
    kinds = ("pairwise",)

    def matches(self, row: Mapping[str, Any]) -> bool:
        chosen = row.get("chosen")
        return (
            "prompt" not in row
            and "rejected" in row
            and isinstance(chosen, str)
            and chosen.lstrip().startswith("Human:")
        )

    def parse(
        self, row: Mapping[str, Any], *, kind: RecordKind, source: str, index: int
    ) -> list[Record]:
        del kind, index
        chosen = _hh_turns(as_str(get(row, "chosen"), "chosen"), "chosen")
        rejected = _hh_turns(as_str(get(row, "rejected"), "rejected"), "rejected")
        if chosen[:-1] != rejected[:-1]:
            raise DataError(
                "the rejected transcript's turns before the last differ from chosen's",
                field="rejected",
                reason="prompt_mismatch",
            )
        record = PairwiseRecord(chosen[:-1], chosen[-1:], rejected[-1:], source=source)
        names = {"prompt": "chosen"}
        return [validate_record(record, names=names)]


@dataclasses.dataclass(frozen=True)
class UltraFeedbackFormat(Format):
    """UltraFeedback rows, as ranked lists or binarised pairs.

    Args:
        policy: how kind ``"pairwise"`` picks a pair. Chosen is always the highest-scored
            completion (the first one in file order when several share the top score).
            ``"best_vs_worst"`` (default) rejects the lowest-scored one (the first of
            equals); ``"best_vs_random"`` rejects one drawn uniformly from the completions
            scored strictly below the best, seeded by ``(seed, row index)`` so reruns agree.
            A row whose completions all share one score is a tie: it is dropped and counted
            as ``skipped["tie"]`` (always, even without ``skip_invalid``).
        score: the per-completion score: ``"overall_score"`` (default),
            ``"fine-grained_score"``, or ``"mean_rating"`` (mean of the numeric
            ``annotations[aspect]["Rating"]`` values; ``"N/A"`` ratings are left out).
        seed: seed for ``"best_vs_random"``.
    """

    policy: Literal["best_vs_worst", "best_vs_random"] = "best_vs_worst"
    score: Literal["overall_score", "fine-grained_score", "mean_rating"] = "overall_score"
    seed: int = 0

    name: ClassVar[str] = "ultrafeedback"
    kinds: ClassVar[tuple[RecordKind, ...]] = ("pairwise", "ranked")

    def __post_init__(self) -> None:
        if self.policy not in ("best_vs_worst", "best_vs_random"):
            raise ValueError(f"unknown policy {self.policy!r}")
        if self.score not in ("overall_score", "fine-grained_score", "mean_rating"):
            raise ValueError(f"unknown score {self.score!r}")

    def matches(self, row: Mapping[str, Any]) -> bool:
        return "completions" in row and ("instruction" in row or "prompt" in row)

    def _score(self, completion: Mapping[str, Any], field: str) -> float:
        if self.score != "mean_rating":
            key = f"{field}.{self.score}"
            return as_float(get(completion, self.score, key), key)
        annotations = get(completion, "annotations", f"{field}.annotations")
        ratings = []
        for aspect, notes in annotations.items() if isinstance(annotations, Mapping) else ():
            rating = notes.get("Rating") if isinstance(notes, Mapping) else None
            try:
                value = float(rating)
            except (TypeError, ValueError):
                continue  # "N/A" or absent: not rated on this aspect
            ratings.append(as_float(value, f"{field}.annotations.{aspect}.Rating"))
        if not ratings:
            raise DataError(
                "no numeric ratings", field=f"{field}.annotations", reason="missing_field"
            )
        return sum(ratings) / len(ratings)

    def parse(
        self, row: Mapping[str, Any], *, kind: RecordKind, source: str, index: int
    ) -> list[Record]:
        pkey = "instruction" if "instruction" in row else "prompt"
        prompt = as_str(get(row, pkey), pkey)
        responses, scores = [], []
        for i, completion in enumerate(as_list(get(row, "completions"), "completions")):
            field = f"completions[{i}]"
            if not isinstance(completion, Mapping):
                raise DataError("expected an object", field=field, reason="wrong_type")
            key = f"{field}.response"
            responses.append(as_str(get(completion, "response", key), key))
            scores.append(self._score(completion, field))
        if len(responses) < 2:
            raise DataError(
                f"needs at least 2 completions, got {len(responses)}",
                field="completions",
                reason="too_few_responses",
            )
        if kind == "ranked":
            record = RankedRecord(prompt, tuple(responses), tuple(scores), source=source)
            return [validate_record(record, names={"prompt": pkey, "responses": "completions"})]
        best = int(np.argmax(scores))
        worse = [j for j, s in enumerate(scores) if s < scores[best]]
        if not worse:
            raise RowDropped("tie", f"all {len(scores)} completions score {scores[best]}")
        if self.policy == "best_vs_worst":
            other = int(np.argmin(scores))
        else:
            other = worse[int(np.random.default_rng([self.seed, index]).integers(len(worse)))]
        record = PairwiseRecord(
            prompt,
            responses[best],
            responses[other],
            chosen_score=scores[best],
            rejected_score=scores[other],
            source=source,
        )
        names = {
            "prompt": pkey,
            "chosen": f"completions[{best}].response",
            "rejected": f"completions[{other}].response",
        }
        return [validate_record(record, names=names)]


class ShpFormat(Format):
    name = "shp"
    kinds = ("pairwise",)

    def matches(self, row: Mapping[str, Any]) -> bool:
        return _has(row, "history", "human_ref_A", "human_ref_B", "labels")

    def parse(
        self, row: Mapping[str, Any], *, kind: RecordKind, source: str, index: int
    ) -> list[Record]:
        del kind, index
        prompt = as_str(get(row, "history"), "history")
        refs = {k: as_str(get(row, f"human_ref_{k}"), f"human_ref_{k}") for k in "AB"}
        scores = {}
        for k in "AB":
            value = row.get(f"score_{k}")
            scores[k] = None if value is None else as_float(value, f"score_{k}")
        label = as_int(get(row, "labels"), "labels")
        if label not in (0, 1):
            raise DataError(
                f"labels must be 1 (A preferred) or 0 (B preferred), got {label}",
                field="labels",
                reason="out_of_range",
            )
        good, bad = ("A", "B") if label == 1 else ("B", "A")
        record = PairwiseRecord(
            prompt,
            refs[good],
            refs[bad],
            chosen_score=scores[good],
            rejected_score=scores[bad],
            source=source,
        )
        names = {
            "prompt": "history",
            "chosen": f"human_ref_{good}",
            "rejected": f"human_ref_{bad}",
            "chosen_score": f"score_{good}",
            "rejected_score": f"score_{bad}",
        }
        return [validate_record(record, names=names)]


_REGISTRY: dict[str, Format] = {
    f.name: f
    for f in (
        StandardFormat(),
        ConversationalFormat(),
        ImplicitPromptFormat(),
        HhRlhfFormat(),
        UltraFeedbackFormat(),
        ShpFormat(),
        JaxprefFormat(),
    )
}
FORMATS: tuple[str, ...] = tuple(_REGISTRY)
"""Format names accepted by ``format=`` (besides ``"auto"``)."""

_DETECTION_ORDER = (
    "shp",
    "ultrafeedback",
    "jaxpref",
    "standard",
    "conversational",
    "hh_rlhf",
    "implicit_prompt",
)


def get_format(format: str | Format) -> Format:
    """The format named ``format`` (a :class:`Format` instance is returned as is).

    >>> get_format("shp").kinds
    ('pairwise',)
    """
    if isinstance(format, Format):
        return format
    if format not in _REGISTRY:
        raise DataError(
            f"unknown format {format!r}; known formats: auto, {', '.join(FORMATS)}",
            reason="unknown_format",
        )
    return _REGISTRY[format]


def detect_format(row: Mapping[str, Any]) -> Format:
    """The format whose fields ``row`` has (see the module docstring for the order).

    >>> detect_format({"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}).name
    'standard'
    >>> detect_format({"chosen": "\\n\\nHuman: Hi\\n\\nAssistant: Hello", "rejected": "..."}).name
    'hh_rlhf'
    """
    for name in _DETECTION_ORDER:
        if _REGISTRY[name].matches(row):
            return _REGISTRY[name]
    raise DataError(
        f"cannot detect the format from fields {sorted(row)}; pass format= one of "
        f"{', '.join(FORMATS)}",
        reason="unknown_format",
    )
