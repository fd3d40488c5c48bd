"""Validation of preference records and of the raw values they are built from.

Two layers, both raising :class:`~jaxpref.data.DataError` with a ``field`` and a ``reason``
(a stable code from :data:`REASONS`, used to count skipped rows):

* ``as_*`` helpers turn one raw value (parsed JSON, a Parquet cell) into the Python type a
  record holds, checking what can be checked on that value alone: its type, finiteness,
  non-emptiness, message roles.
* :func:`validate_record` checks a whole record, including what needs several fields:
  chosen identical to rejected, roles in order across prompt and response, ranks forming a
  permutation, scores agreeing with ranks. Readers call it on every record they return; call
  it yourself on records built in code.

The errors carry no file location; readers add it with :meth:`DataError.locate`.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jaxpref.data.records import (
    ROLES,
    Conversation,
    DataError,
    Message,
    PairwiseRecord,
    RankedRecord,
    Record,
    Text,
    UnpairedRecord,
    is_conversation,
)

REASONS: Mapping[str, str] = {
    "invalid_json": "the line (or file) is not valid JSON",
    "non_utf8": "the bytes are not valid UTF-8",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong type",
    "empty_text": "an empty (or whitespace-only) prompt, response or message",
    "identical_responses": "chosen is identical to rejected",
    "non_finite": "a score, strength or margin is NaN or infinite",
    "out_of_range": "a value outside its allowed range (e.g. strength not in [0, 1])",
    "bad_ranks": "ranks are not a permutation of 0..K-1",
    "inconsistent": "fields disagree (list lengths, scores vs ranks, text vs conversation)",
    "unknown_role": "a message role outside system/user/assistant/tool",
    "role_order": "conversation roles out of order",
    "prompt_mismatch": "chosen and rejected transcripts do not share the same prompt",
    "no_common_prompt": "an implicit-prompt pair has no common prefix to use as prompt",
    "too_few_responses": "fewer than two responses in a ranked list",
    "wrong_kind": "the row holds another kind of record than the one asked for",
    "unknown_format": "the row's fields match no known format",
    "unsupported": "a valid record the target cannot store (TFDS: a multi-message response)",
    "invalid_file": "the file cannot be parsed at all (e.g. not a Parquet file)",
    "tie": "binarisation found no strictly worse response (all scores tied); always dropped",
    "empty_response": "a response that tokenises to nothing",
    "truncated_to_empty": "truncation would cut a response to nothing",
    "chat_template": "the chat template breaks the prompt-prefix property of a conversation",
    "mixed_kinds": "records of different kinds in one tokenised dataset",
    "no_labels": "a ranked record with neither scores nor ranks",
}
"""Every ``DataError.reason`` the readers produce, with what it means."""

# Which role may follow which; ``None`` is the start of a conversation.
_NEXT_ROLES: Mapping[str | None, tuple[str, ...]] = {
    None: ("system", "user"),
    "system": ("user",),
    "user": ("assistant",),
    "assistant": ("user", "tool"),
    "tool": ("tool", "assistant"),
}


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def as_str(value: Any, field: str) -> str:
    """A non-empty string (whitespace-only counts as empty)."""
    if not isinstance(value, str):
        raise DataError(
            f"expected a string, got {_type_name(value)}", field=field, reason="wrong_type"
        )
    if not value.strip():
        raise DataError("empty text", field=field, reason="empty_text")
    return value


def as_messages(value: Any, field: str) -> Conversation:
    """A non-empty list of ``{"role", "content"}`` dicts (or :class:`Message`) as a tuple.

    Keys other than ``role`` and ``content`` are ignored. Roles must be one of
    ``system, user, assistant, tool``; their order is checked by :func:`validate_record`.
    """
    if not isinstance(value, list | tuple):
        raise DataError(
            f"expected a list of messages, got {_type_name(value)}",
            field=field,
            reason="wrong_type",
        )
    if not value:
        raise DataError("empty conversation", field=field, reason="empty_text")
    messages = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if isinstance(item, Message):
            role, content = item.role, item.content
        elif isinstance(item, Mapping):
            for key in ("role", "content"):
                if item.get(key) is None:
                    raise DataError(
                        f"message has no {key!r}", field=f"{where}.{key}", reason="missing_field"
                    )
            role, content = item["role"], item["content"]
        else:
            raise DataError(
                f"expected a message dict, got {_type_name(item)}",
                field=where,
                reason="wrong_type",
            )
        if not isinstance(role, str):
            raise DataError(
                f"expected a string, got {_type_name(role)}",
                field=f"{where}.role",
                reason="wrong_type",
            )
        if role not in ROLES:
            raise DataError(
                f"unknown role {role!r}; expected one of {', '.join(ROLES)}",
                field=f"{where}.role",
                reason="unknown_role",
            )
        messages.append(Message(role, as_str(content, f"{where}.content")))
    return tuple(messages)


def as_text(value: Any, field: str, *, conversation: bool | None = None) -> Text:
    """Plain text (a string) or a conversation (a list of messages).

    Args:
        value: the raw value.
        field: its name, for errors.
        conversation: ``True`` requires a list of messages, ``False`` a string, ``None``
            accepts either.
    """
    if conversation is None:
        conversation = isinstance(value, list | tuple)
    return as_messages(value, field) if conversation else as_str(value, field)


def as_float(
    value: Any, field: str, *, low: float | None = None, high: float | None = None
) -> float:
    """A finite real number (booleans are rejected), optionally within ``[low, high]``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise DataError(
            f"expected a number, got {_type_name(value)}", field=field, reason="wrong_type"
        )
    result = float(value)
    if not math.isfinite(result):
        raise DataError(f"{result} is not finite", field=field, reason="non_finite")
    if (low is not None and result < low) or (high is not None and result > high):
        raise DataError(f"{result} is outside [{low}, {high}]", field=field, reason="out_of_range")
    return result


def as_int(value: Any, field: str) -> int:
    """An integer (booleans and floats are rejected)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise DataError(
            f"expected an integer, got {_type_name(value)}", field=field, reason="wrong_type"
        )
    return int(value)


def as_bool(value: Any, field: str) -> bool:
    """A boolean (``true``/``false``; ``0``/``1`` are rejected as ambiguous)."""
    if not isinstance(value, bool | np.bool_):
        raise DataError(
            f"expected true or false, got {_type_name(value)}", field=field, reason="wrong_type"
        )
    return bool(value)


def as_list(value: Any, field: str) -> list[Any]:
    """A JSON array (list or tuple)."""
    if not isinstance(value, list | tuple):
        raise DataError(
            f"expected a list, got {_type_name(value)}", field=field, reason="wrong_type"
        )
    return list(value)


def _normalised(text: Text) -> Any:
    if is_conversation(text):
        return tuple((m.role, m.content.strip()) for m in text)
    return text.strip()


def _check_text(text: Any, field: str) -> Text:
    if isinstance(text, tuple):
        return as_messages(text, field)
    return as_str(text, field)


def check_role_order(*parts: tuple[str, Conversation]) -> None:
    """Roles of the concatenated ``(field, messages)`` parts are in a valid order.

    A conversation opens with an optional system message, then a user turn; a user turn is
    answered by the assistant; the assistant may call tools, whose results go back to it.

    Raises:
        DataError: ``reason="role_order"``, naming ``field[i].role`` of the first bad turn.
    """
    previous = None
    for name, messages in parts:
        for i, message in enumerate(messages):
            allowed = _NEXT_ROLES[previous]
            if message.role not in allowed:
                after = "at the start" if previous is None else f"after {previous!r}"
                raise DataError(
                    f"roles out of order: {message.role!r} {after} (expected "
                    f"{' or '.join(map(repr, allowed))})",
                    field=f"{name}[{i}].role",
                    reason="role_order",
                )
            previous = message.role


def _check_roles(prompt: Conversation, response: Conversation, names: tuple[str, str]) -> None:
    """Roles of ``prompt + response`` are in order; the response is the assistant's."""
    for end, i in (("start", 0), ("end", len(response) - 1)):
        if response[i].role != "assistant":
            raise DataError(
                f"a response must {end} with an assistant turn, got {response[i].role!r}",
                field=f"{names[1]}[{i}].role",
                reason="role_order",
            )
    check_role_order((names[0], prompt), (names[1], response))


def _check_response(prompt: Text, response: Any, field: str, prompt_field: str) -> Text:
    response = _check_text(response, field)
    if is_conversation(prompt) != is_conversation(response):
        kind = "a conversation" if is_conversation(prompt) else "plain text"
        raise DataError(
            f"the prompt is {kind}, so the response must be too",
            field=field,
            reason="inconsistent",
        )
    if is_conversation(prompt):
        _check_roles(prompt, response, (prompt_field, field))
    return response


def _check_optional_float(value: Any, field: str, **bounds: float) -> None:
    if value is not None:
        as_float(value, field, **bounds)


def validate_record(record: Record, *, names: Mapping[str, str] | None = None) -> Record:
    """Check a record; return it unchanged or raise :class:`DataError`.

    Args:
        record: a :class:`PairwiseRecord`, :class:`RankedRecord` or :class:`UnpairedRecord`.
        names: optional map from record field names to the names the source used (e.g.
            ``{"chosen": "human_ref_A"}``), so errors name the field the user wrote.

    Returns:
        ``record``.

    Raises:
        DataError: with ``field`` and ``reason`` set (see :data:`REASONS`).

    >>> from jaxpref.data import PairwiseRecord
    >>> validate_record(PairwiseRecord("2+2?", "4", "4"))
    Traceback (most recent call last):
    ...
    jaxpref.data.records.DataError: field 'rejected': chosen and rejected are identical
    """
    names = dict(names or {})

    def name(field: str) -> str:
        return names.get(field, field)

    prompt = _check_text(record.prompt, name("prompt"))
    pname = name("prompt")
    if isinstance(record, PairwiseRecord):
        chosen = _check_response(prompt, record.chosen, name("chosen"), pname)
        rejected = _check_response(prompt, record.rejected, name("rejected"), pname)
        if _normalised(chosen) == _normalised(rejected):
            raise DataError(
                "chosen and rejected are identical",
                field=name("rejected"),
                reason="identical_responses",
            )
        _check_optional_float(record.strength, name("strength"), low=0.0, high=1.0)
        for field in ("margin", "chosen_score", "rejected_score"):
            _check_optional_float(getattr(record, field), name(field))
        if record.rationale is not None and not isinstance(record.rationale, str):
            raise DataError(
                f"expected a string, got {_type_name(record.rationale)}",
                field=name("rationale"),
                reason="wrong_type",
            )
    elif isinstance(record, RankedRecord):
        _validate_ranked(record, prompt, name, pname)
    elif isinstance(record, UnpairedRecord):
        _check_response(prompt, record.completion, name("completion"), pname)
        as_bool(record.desirable, name("desirable"))
    else:
        raise DataError(f"not a record: {_type_name(record)}", reason="wrong_type")
    return record


def _validate_ranked(
    record: RankedRecord, prompt: Text, name: Callable[[str], str], pname: str
) -> None:
    responses = record.responses
    if not isinstance(responses, tuple):
        raise DataError(
            f"expected a tuple, got {_type_name(responses)}",
            field=name("responses"),
            reason="wrong_type",
        )
    if len(responses) < 2:
        raise DataError(
            f"a ranked list needs at least 2 responses, got {len(responses)}",
            field=name("responses"),
            reason="too_few_responses",
        )
    for i, response in enumerate(responses):
        _check_response(prompt, response, f"{name('responses')}[{i}]", pname)
    if record.scores is None and record.ranks is None:
        raise DataError(
            "a ranked list needs scores or ranks", field=name("scores"), reason="missing_field"
        )
    size = len(responses)
    if record.scores is not None:
        check_lengths(record.scores, size, name("scores"))
        for i, score in enumerate(record.scores):
            as_float(score, f"{name('scores')}[{i}]")
    if record.ranks is not None:
        check_lengths(record.ranks, size, name("ranks"))
        ranks = [as_int(r, f"{name('ranks')}[{i}]") for i, r in enumerate(record.ranks)]
        if sorted(ranks) != list(range(size)):
            raise DataError(
                f"ranks must be a permutation of 0..{size - 1} (0 = best), got {ranks}",
                field=name("ranks"),
                reason="bad_ranks",
            )
        if record.scores is not None:
            order = sorted(range(size), key=ranks.__getitem__)
            for better, worse in itertools.pairwise(order):
                if record.scores[better] < record.scores[worse]:
                    raise DataError(
                        f"response {better} is ranked above response {worse} but has a "
                        f"lower score ({record.scores[better]} < {record.scores[worse]})",
                        field=name("ranks"),
                        reason="inconsistent",
                    )


def check_lengths(values: Sequence[Any], size: int, field: str) -> None:
    """``values`` is a sequence of length ``size``."""
    if not isinstance(values, tuple | list):
        raise DataError(
            f"expected a list, got {_type_name(values)}", field=field, reason="wrong_type"
        )
    if len(values) != size:
        raise DataError(
            f"has {len(values)} entries for {size} responses", field=field, reason="inconsistent"
        )
