"""Validated preference record types and the error every reader raises.

Three record kinds, all frozen dataclasses holding plain Python values:

* :class:`PairwiseRecord`: a prompt, a chosen and a rejected response, optional strength,
  margin, per-response scores and rationale.
* :class:`RankedRecord`: a prompt and K responses with scores and/or ranks (ties allowed in
  scores; ranks must be a permutation of ``0..K-1``, 0 = best).
* :class:`UnpairedRecord`: a prompt, one completion and a desirable flag (KTO-style).

A prompt is either text or a conversation (a tuple of :class:`Message`); a response is text
or the assistant turn(s) that continue the conversation. Every record remembers where it
came from (``source``: ``"file:line"``) so later errors can point back to the file.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, TypeAlias

ROLES = ("system", "user", "assistant", "tool")
RECORD_KINDS = ("pairwise", "ranked", "unpaired")
RecordKind: TypeAlias = Literal["pairwise", "ranked", "unpaired"]


class DataError(ValueError):
    """A malformed record: names the file, the line (or row), the field and the problem.

    Attributes:
        path: the file, if known.
        line: 1-based line number in a text file (JSONL, or where a JSON array element starts).
        row: 0-based index of the record in a JSON array or a Parquet table.
        field: the offending field, e.g. ``"chosen"`` or ``"completions[2].response"``.
        reason: a short stable code (see :data:`jaxpref.data.validate.REASONS`), used to count
            skipped rows by cause.
        detail: the problem alone, without the location prefix.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        reason: str = "invalid",
        row: int | None = None,
    ) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, reason
        self.row, self.detail = row, message
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}" + (f" (row {row})" if row is not None else ""))
        elif row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def locate(
        self, *, path: str | None = None, line: int | None = None, row: int | None = None
    ) -> DataError:
        """The same error with a file location filled in (existing location parts are kept)."""
        return DataError(
            self.detail,
            path=self.path if self.path is not None else path,
            line=self.line if self.line is not None else line,
            row=self.row if self.row is not None else row,
            field=self.field,
            reason=self.reason,
        )


@dataclasses.dataclass(frozen=True)
class Message:
    """One conversation turn."""

    role: str
    content: str


Conversation: TypeAlias = tuple[Message, ...]
Text: TypeAlias = str | Conversation


@dataclasses.dataclass(frozen=True)
class PairwiseRecord:
    """A preference pair. ``strength``: P(chosen ≻ rejected) in [0, 1] if known."""

    prompt: Text
    chosen: Text
    rejected: Text
    strength: float | None = None
    margin: float | None = None
    chosen_score: float | None = None
    rejected_score: float | None = None
    rationale: str | None = None
    source: str | None = None

    kind: RecordKind = dataclasses.field(default="pairwise", init=False)


@dataclasses.dataclass(frozen=True)
class RankedRecord:
    """K responses to one prompt; higher score = better, rank 0 = best."""

    prompt: Text
    responses: tuple[Text, ...]
    scores: tuple[float, ...] | None = None
    ranks: tuple[int, ...] | None = None
    source: str | None = None

    kind: RecordKind = dataclasses.field(default="ranked", init=False)


@dataclasses.dataclass(frozen=True)
class UnpairedRecord:
    """One completion labelled desirable or undesirable."""

    prompt: Text
    completion: Text
    desirable: bool
    source: str | None = None

    kind: RecordKind = dataclasses.field(default="unpaired", init=False)


Record: TypeAlias = PairwiseRecord | RankedRecord | UnpairedRecord


def is_conversation(text: Text) -> bool:
    """True for a conversation (tuple of messages), False for plain text."""
    return isinstance(text, tuple)
