"""Conversations through a chat template: response tokens and their loss mask.

The full conversation (prompt + response messages) is rendered without the generation
prompt and tokenised; for each assistant message, the tokens between the rendering of
"conversation so far + generation prompt" and of "conversation through this message" are
its turn. The turn's mask stops after its last end-of-turn token, so ChatML's trailing
newline stays in the sequence untrained; non-assistant response messages (tool output)
are untrained.

This relies on the prefix property: each shorter rendering (text, then tokens) must be a
prefix of the full one. A template that rewrites earlier turns or ignores
``add_generation_prompt``, or a tokenizer that merges tokens across the boundary, breaks
it, and :class:`~jaxpref.data.records.DataError` (``reason="chat_template"``) names the
record's source instead of a wrong mask being trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxpref.data.records import DataError, Message, Text, is_conversation


def encode(tokenizer: Any, text: str, special: bool) -> np.ndarray:
    """``tokenizer.encode`` as int32 NumPy."""
    return np.asarray(tokenizer.encode(text, add_special_tokens=special), dtype=np.int32)


def as_messages(text: Text, role: str) -> tuple[Message, ...]:
    """A conversation as is; plain text as one message of ``role``."""
    return text if is_conversation(text) else (Message(role, text),)  # type: ignore[return-value]


def _check_prefix(
    prefix_text: str, prefix: np.ndarray, text: str, ids: np.ndarray, source: str | None
) -> None:
    if not text.startswith(prefix_text):
        raise DataError(
            "chat template breaks the prefix property: the rendered prompt (with the "
            "generation prompt) is not a prefix of the rendered conversation "
            f"({prefix_text[-40:]!r} vs {text[len(prefix_text) - 40 : len(prefix_text)]!r}); "
            "the template may rewrite earlier turns or ignore add_generation_prompt",
            path=source,
            reason="chat_template",
        )
    if len(prefix) > len(ids) or not np.array_equal(ids[: len(prefix)], prefix):
        raise DataError(
            "tokenisation breaks the prefix property: the tokens of the rendered prompt are "
            "not a prefix of the tokens of the conversation (a token spans the boundary)",
            path=source,
            reason="chat_template",
        )


def _end_of_turn_ids(tokenizer: Any, end_of_turn: Sequence[str] | None) -> frozenset[int]:
    if end_of_turn is None:
        return frozenset(int(i) for i in getattr(tokenizer, "all_special_ids", ()))
    ids = [tokenizer.convert_tokens_to_ids(t) for t in end_of_turn]
    unknown = [t for t, i in zip(end_of_turn, ids, strict=True) if i is None]
    if unknown:
        raise ValueError(f"end_of_turn tokens not in the vocabulary: {unknown}")
    return frozenset(int(i) for i in ids)


class ChatRenderer:
    """Renders one prompt (cached) and the responses that continue it.

    Args:
      tokenizer: a Hugging Face tokenizer with a ``chat_template``.
      prompt: the prompt messages.
      end_of_turn: tokens ending an assistant turn (None: the tokenizer's special tokens).
      template_kwargs: extra ``apply_chat_template`` keyword arguments.
      source: the record's source, for error messages.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt: tuple[Message, ...],
        *,
        end_of_turn: Sequence[str] | None,
        template_kwargs: Mapping[str, Any],
        source: str | None,
    ) -> None:
        self.tokenizer, self.prompt, self.source = tokenizer, prompt, source
        self.template_kwargs = dict(template_kwargs)
        self.eot = _end_of_turn_ids(tokenizer, end_of_turn)
        self.prompt_text = self._render(prompt, True)
        self.prompt_ids = encode(tokenizer, self.prompt_text, False)

    def _render(self, messages: Sequence[Message], generation: bool) -> str:
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise DataError(
                "conversational record, but the tokenizer has no chat_template",
                path=self.source,
                reason="chat_template",
            )
        text = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=generation,
            **self.template_kwargs,
        )
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}")
        return text

    def response(self, response: tuple[Message, ...]) -> tuple[np.ndarray, np.ndarray]:
        """The tokens the response adds to :attr:`prompt_ids`, and their bool loss mask."""
        source = self.source
        conv = self.prompt + response
        text = self._render(conv, False)
        ids = encode(self.tokenizer, text, False)
        _check_prefix(self.prompt_text, self.prompt_ids, text, ids, source)
        mask = np.zeros(len(ids), bool)
        for j in range(len(self.prompt), len(conv)):
            if conv[j].role != "assistant":
                continue
            if j == len(self.prompt):
                start_text, start = self.prompt_text, self.prompt_ids
            else:
                start_text = self._render(conv[:j], True)
                start = encode(self.tokenizer, start_text, False)
                _check_prefix(start_text, start, text, ids, source)
            if j + 1 == len(conv):
                end = ids
            else:
                end_text = self._render(conv[: j + 1], False)
                end = encode(self.tokenizer, end_text, False)
                _check_prefix(end_text, end, text, ids, source)
            lo, hi = len(start), len(end)
            ends = [i for i in range(lo, hi) if int(ids[i]) in self.eot]
            if ends:
                hi = ends[-1] + 1
            mask[lo:hi] = True
        n = len(self.prompt_ids)
        return ids[n:], mask[n:]
