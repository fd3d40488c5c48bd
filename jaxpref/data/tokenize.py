"""Tokenising preference records: chat templates, loss masks and truncation.

The caller passes a Hugging Face tokenizer (a ``transformers`` fast tokenizer, as returned by
``AutoTokenizer.from_pretrained`` or :func:`jaxpref.models.load_tokenizer`): this module only
calls ``encode``, ``apply_chat_template``, ``eos_token_id``, ``all_special_ids`` and
``convert_tokens_to_ids`` on it.

Every response becomes one token sequence ``prompt + response`` with a boolean
``response_mask`` aligned with the tokens (not shifted), True on the tokens the loss is
trained on:

* Plain text: ``encode(prompt)`` (with the tokenizer's special tokens, e.g. BOS, when
  ``add_special_tokens``), then ``encode(response)`` and the EOS token (``add_eos``). Prompt
  and response are encoded separately, so no token spans the boundary. Every response token
  (EOS included) is trained on.
* Conversations: the prompt messages are rendered by the chat template with
  ``add_generation_prompt=True``; the full conversation (prompt + assistant turn) is
  rendered without it, and the response tokens are what the full rendering adds. For each
  assistant message the tokens between "conversation so far + generation prompt" and
  "conversation through this message" are trained on: the assistant's content and its
  end-of-turn token. Template text after the last end-of-turn token of the turn (ChatML's
  trailing newline) and non-assistant messages of a multi-message response (tool output)
  stay in the sequence but are not trained on. A text prompt with a conversational response
  (or the reverse) is treated as a conversation with a user (assistant) message.

The conversational split relies on the *prefix property* (rendering and tokenising the
prompt with the generation prompt gives a prefix of the conversation's tokens); when a
template breaks it, :func:`tokenize_record` raises
:class:`~jaxpref.data.records.DataError` naming the record's source rather than training on
a wrong mask.

Truncation (:class:`TokenizeConfig`): the prompt is cut to ``max_prompt_length`` (keeping
its end by default), then each response to ``max_length - len(prompt)`` (keeping its start
by default). A record whose response would keep no trained token is excluded and counted
by reason (:data:`EXCLUSION_REASONS`) in the :class:`TokenizeReport`, or raises with
``strict=True``. A pairwise or ranked record is excluded as a whole when any of its
responses is.

>>> from jaxpref.data.records import PairwiseRecord
>>> class Chars:  # a stand-in tokenizer: one token per character, EOS = 0
...     eos_token_id = 0
...     def encode(self, text, add_special_tokens=True):
...         return [ord(c) for c in text]
>>> ex = tokenize_record(PairwiseRecord("Hi ", "yes", "no"), Chars())
>>> [len(ids) for ids in ex.input_ids], ex.prompt_length
([7, 6], 3)
>>> ex.response_mask[0].astype(int).tolist()
[0, 0, 0, 1, 1, 1, 1]
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from jaxpref.data._chat import ChatRenderer, as_messages, encode
from jaxpref.data.records import (
    DataError,
    PairwiseRecord,
    RankedRecord,
    Record,
    RecordKind,
    Text,
    UnpairedRecord,
    is_conversation,
)

__all__ = [
    "EXCLUSION_REASONS",
    "TokenizeConfig",
    "TokenizeReport",
    "TokenizedDataset",
    "TokenizedExample",
    "tokenize_record",
    "tokenize_records",
]

logger = logging.getLogger(__name__)

#: Why a record is left out of the tokenised dataset (``DataError.reason`` with ``strict``).
#: ``"empty_response"``: a response has no trained token at all (e.g. an empty text with
#: ``add_eos=False``). ``"truncated_to_empty"``: truncation cut every trained token of a
#: response (the prompt filled ``max_length``, or ``response_keep="end"`` kept only
#: untrained template tokens).
EXCLUSION_REASONS = ("empty_response", "truncated_to_empty")

_KEEP = ("start", "end")
_EXAMPLE_SOURCES = 5  # sources listed per exclusion reason in the report


@dataclasses.dataclass(frozen=True)
class TokenizeConfig:
    """How records become token sequences.

    Attributes:
      max_prompt_length: prompt tokens kept (None: no limit).
      max_length: prompt + response tokens kept per sequence (None: no limit).
      prompt_keep: which part of a long prompt is kept: ``"end"`` (default, the most
        recent turns and the generation prompt; a leading BOS token is kept too) or
        ``"start"``.
      response_keep: which part of a long response is kept: ``"start"`` (default) or
        ``"end"``.
      add_eos: plain text only: append the tokenizer's EOS token to each response.
      add_special_tokens: plain text only: let the tokenizer add its special tokens (BOS)
        to the prompt. Chat templates write their own special tokens.
      end_of_turn: tokens that end an assistant turn; the loss mask of a turn stops after
        the last of them. None: any special token of the tokenizer.
      chat_template_kwargs: extra keyword arguments for ``apply_chat_template`` (template
        variables such as ``enable_thinking``).
    """

    max_prompt_length: int | None = None
    max_length: int | None = None
    prompt_keep: Literal["start", "end"] = "end"
    response_keep: Literal["start", "end"] = "start"
    add_eos: bool = True
    add_special_tokens: bool = True
    end_of_turn: tuple[str, ...] | None = None
    chat_template_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("max_prompt_length", "max_length"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if (
            self.max_prompt_length is not None
            and self.max_length is not None
            and self.max_prompt_length >= self.max_length
        ):
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}) must be < max_length "
                f"({self.max_length}), or every response could be cut to nothing"
            )
        for name in ("prompt_keep", "response_keep"):
            if getattr(self, name) not in _KEEP:
                raise ValueError(f"{name} must be one of {_KEEP}, got {getattr(self, name)!r}")
        if isinstance(self.end_of_turn, str):
            object.__setattr__(self, "end_of_turn", (self.end_of_turn,))

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (part of a cache fingerprint)."""
        out = dataclasses.asdict(self)
        out["end_of_turn"] = None if self.end_of_turn is None else list(self.end_of_turn)
        out["chat_template_kwargs"] = {k: repr(v) for k, v in self.chat_template_kwargs.items()}
        return out


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedExample:
    """One record as token sequences, one per response.

    Attributes:
      kind: the record kind; the number of sequences is 2 for ``"pairwise"`` (chosen,
        rejected), K for ``"ranked"`` (in the record's response order) and 1 for
        ``"unpaired"``.
      input_ids: one int32 ``[length_k]`` array per response: prompt then response tokens.
      response_mask: bool arrays aligned with ``input_ids`` (not shifted): True on the
        response tokens the loss is trained on.
      prompt_length: number of prompt tokens at the start of every sequence.
      features: per-record values the batches carry: pairwise ``strength``, ``margin``,
        ``scores`` (``(chosen_score, rejected_score)``); ranked ``scores``, ``ranks``;
        unpaired ``desirable``. A missing value is None.
      source: the record's source (``"file:line"``).
      truncated: which parts were cut: a subset of ``{"prompt", "response"}``.
    """

    kind: RecordKind
    input_ids: tuple[np.ndarray, ...]
    response_mask: tuple[np.ndarray, ...]
    prompt_length: int
    features: Mapping[str, Any]
    source: str | None = None
    truncated: frozenset[str] = frozenset()

    @property
    def num_sequences(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(len(ids) for ids in self.input_ids)


@dataclasses.dataclass(frozen=True)
class TokenizeReport:
    """What tokenisation did to a dataset.

    Attributes:
      num_records: records read.
      num_kept: records tokenised and kept.
      truncated: number of kept records whose ``"prompt"`` / ``"response"`` (any of its
        responses) was cut.
      excluded: number of records left out, by reason (:data:`EXCLUSION_REASONS`).
      excluded_sources: the first few sources per exclusion reason.
    """

    num_records: int
    num_kept: int
    truncated: Mapping[str, int]
    excluded: Mapping[str, int]
    excluded_sources: Mapping[str, tuple[str, ...]]

    def summary(self) -> str:
        parts = [f"{self.num_kept}/{self.num_records} records kept"]
        for part, count in sorted(self.truncated.items()):
            if count:
                parts.append(f"{count} with the {part} truncated")
        for reason, count in sorted(self.excluded.items()):
            if count:
                where = ", ".join(self.excluded_sources.get(reason, ()))
                parts.append(f"{count} excluded ({reason}{': ' + where if where else ''})")
        return "; ".join(parts)


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedDataset(Sequence[TokenizedExample]):
    """The kept examples (a sequence; ``example_index`` in batches indexes it) + a report.

    Attributes:
      examples: the tokenised examples, in record order.
      record_indices: int64 ``[len(examples)]``: position of each example's record in the
        input records.
      report: truncation and exclusion counts.
    """

    examples: tuple[TokenizedExample, ...]
    record_indices: np.ndarray
    report: TokenizeReport

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: Any) -> Any:
        return self.examples[index]


# --------------------------------------------------------------------------- records


def _responses(record: Record) -> tuple[Text, ...]:
    if isinstance(record, PairwiseRecord):
        return (record.chosen, record.rejected)
    if isinstance(record, RankedRecord):
        return tuple(record.responses)
    if isinstance(record, UnpairedRecord):
        return (record.completion,)
    raise TypeError(f"not a record: {type(record).__name__}")


def _features(record: Record) -> dict[str, Any]:
    if isinstance(record, PairwiseRecord):
        scores = None
        if record.chosen_score is not None or record.rejected_score is not None:
            scores = (record.chosen_score, record.rejected_score)
        return {"strength": record.strength, "margin": record.margin, "scores": scores}
    if isinstance(record, RankedRecord):
        return {"scores": record.scores, "ranks": record.ranks}
    return {"desirable": bool(record.desirable)}  # type: ignore[union-attr]


def _cut(ids: np.ndarray, size: int, keep: str) -> np.ndarray:
    size = max(size, 0)
    if len(ids) <= size:
        return ids
    return ids[:size] if keep == "start" else ids[len(ids) - size :]


def _cut_prompt(ids: np.ndarray, size: int, keep: str, bos: int | None) -> np.ndarray:
    """``_cut``, except that keeping the end keeps a leading BOS token as well."""
    if keep == "end" and bos is not None and size > 1 and len(ids) > size and ids[0] == bos:
        return np.concatenate([ids[:1], _cut(ids[1:], size - 1, keep)])
    return _cut(ids, size, keep)


def _trainable(prompt_length: int, mask: np.ndarray) -> bool:
    """Whether a response mask has a token with a predecessor to predict it from."""
    return bool(mask[1:].any() if prompt_length == 0 else mask.any())


def tokenize_record(
    record: Record, tokenizer: Any, config: TokenizeConfig | None = None
) -> TokenizedExample:
    """Tokenises one record (see the module docstring for the layout and the masks).

    Args:
      record: a :class:`PairwiseRecord`, :class:`RankedRecord` or :class:`UnpairedRecord`.
      tokenizer: a Hugging Face (``AutoTokenizer``-compatible) tokenizer.
      config: truncation and template options (defaults: no truncation, EOS added).

    Returns:
      A :class:`TokenizedExample`.

    Raises:
      DataError: the template breaks the prefix property (``reason="chat_template"``), or
        the record must be excluded (``reason`` in :data:`EXCLUSION_REASONS`). The message
        names the record's source.
    """
    config = TokenizeConfig() if config is None else config
    source = record.source
    responses = _responses(record)
    conversational = is_conversation(record.prompt) or any(map(is_conversation, responses))
    if conversational:
        chat = ChatRenderer(
            tokenizer,
            as_messages(record.prompt, "user"),
            end_of_turn=config.end_of_turn,
            template_kwargs=config.chat_template_kwargs,
            source=source,
        )
        prompt = chat.prompt_ids
        parts = [chat.response(as_messages(r, "assistant")) for r in responses]
    else:
        prompt = encode(tokenizer, record.prompt, config.add_special_tokens)  # type: ignore[arg-type]
        eos = np.zeros(0, np.int32)
        if config.add_eos:
            if tokenizer.eos_token_id is None:
                raise ValueError("add_eos=True but the tokenizer has no eos_token_id")
            eos = np.asarray([tokenizer.eos_token_id], np.int32)
        parts = []
        for r in responses:
            ids = np.concatenate([encode(tokenizer, r, False), eos])  # type: ignore[arg-type]
            parts.append((ids, np.ones(len(ids), bool)))

    truncated = set()
    if config.max_prompt_length is not None and len(prompt) > config.max_prompt_length:
        bos = getattr(tokenizer, "bos_token_id", None)
        prompt = _cut_prompt(prompt, config.max_prompt_length, config.prompt_keep, bos)
        truncated.add("prompt")
    budget = None if config.max_length is None else config.max_length - len(prompt)
    input_ids, masks = [], []
    for ids, mask in parts:
        if not _trainable(len(prompt), mask):
            raise DataError("a response has no trained token", path=source, reason="empty_response")
        if budget is not None and len(ids) > budget:
            ids = _cut(ids, budget, config.response_keep)
            mask = _cut(mask, budget, config.response_keep)
            truncated.add("response")
            if not _trainable(len(prompt), mask):
                raise DataError(
                    f"truncation to max_length={config.max_length} (prompt: {len(prompt)} "
                    "tokens) leaves a response with no trained token",
                    path=source,
                    reason="truncated_to_empty",
                )
        input_ids.append(np.concatenate([prompt, ids]).astype(np.int32))
        masks.append(np.concatenate([np.zeros(len(prompt), bool), mask]))
    return TokenizedExample(
        kind=record.kind,
        input_ids=tuple(input_ids),
        response_mask=tuple(masks),
        prompt_length=len(prompt),
        features=_features(record),
        source=source,
        truncated=frozenset(truncated),
    )


def tokenize_records(
    records: Iterable[Record],
    tokenizer: Any,
    config: TokenizeConfig | None = None,
    *,
    strict: bool = False,
) -> TokenizedDataset:
    """Tokenises a dataset, counting truncations and excluding empty responses.

    Records whose response would have no trained token are left out, counted by reason in
    ``report.excluded`` and logged (a warning naming a few sources), never silently trained
    on. With ``strict=True`` the first such record raises instead. Template errors (the
    prefix property) always raise.

    Args:
      records: validated records, all of one kind (batches need one layout).
      tokenizer: a Hugging Face tokenizer.
      config: truncation and template options.
      strict: raise :class:`DataError` instead of excluding a record.

    Returns:
      A :class:`TokenizedDataset`: the kept examples, their record indices and a report.
    """
    config = TokenizeConfig() if config is None else config
    examples: list[TokenizedExample] = []
    kept: list[int] = []
    truncated: collections.Counter[str] = collections.Counter(prompt=0, response=0)
    excluded: collections.Counter[str] = collections.Counter()
    sources: dict[str, list[str]] = collections.defaultdict(list)
    kind = None
    n = 0
    for n, record in enumerate(records, start=1):
        if kind is None:
            kind = record.kind
        elif record.kind != kind:
            raise DataError(
                f"mixed record kinds in one dataset: {kind!r} and {record.kind!r}",
                path=record.source,
                reason="mixed_kinds",
            )
        try:
            example = tokenize_record(record, tokenizer, config)
        except DataError as error:
            if strict or error.reason not in EXCLUSION_REASONS:
                raise
            excluded[error.reason] += 1
            if len(sources[error.reason]) < _EXAMPLE_SOURCES:
                sources[error.reason].append(str(record.source or f"record {n - 1}"))
            continue
        truncated.update(example.truncated)
        examples.append(example)
        kept.append(n - 1)
    report = TokenizeReport(
        num_records=n,
        num_kept=len(examples),
        truncated=dict(truncated),
        excluded=dict(excluded),
        excluded_sources={k: tuple(v) for k, v in sources.items()},
    )
    if excluded or any(truncated.values()):
        logger.warning("tokenisation: %s", report.summary())
    return TokenizedDataset(tuple(examples), np.asarray(kept, np.int64), report)
