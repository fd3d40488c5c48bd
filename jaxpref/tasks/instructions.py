"""Chat prompts with format constraints that a program can check: a judge for real models.

Each prompt carries one constraint, and the judge scores a decoded reply by a few checks
(each passed or not). The reply must always be *finished* (the model emitted its end token
within the token budget); the other checks depend on the kind:

============  ==================================================  =============================
kind          example prompt                                      checks besides ``finished``
============  ==================================================  =============================
``number``    "What is 7 + 5? Reply with only the number."        the reply is a bare integer;
                                                                  the right integer appears
``one_word``  "Name a fruit. Answer with one word."               exactly one word
``max_words`` "Describe the sea in at most 5 words."              between 1 and ``limit`` words
``lowercase`` "Write one short sentence about tea, using only     has letters, none upper case
              lowercase letters."
``question``  "Ask me one short question about my pet."           ends with a question mark
============  ==================================================  =============================

A reply *passes* when every check does; its *credit* is the fraction of checks passed (so
"7 + 5 = 12" to the first prompt gets 2/3: finished, the answer appears, not a bare number).
A word is a whitespace-separated piece of the reply holding at least one letter or digit; a
bare integer may carry one trailing full stop ("12." passes).

Prompts are :class:`Prompt` records, read from JSON lines by :func:`read_prompts`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["KINDS", "Prompt", "Verdict", "judge", "judge_all", "read_prompts"]

KINDS = ("number", "one_word", "max_words", "lowercase", "question")
_INTEGER = re.compile(r"[-+]?\d+")
_BARE_INTEGER = re.compile(r"[-+]?\d+\.?")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One user prompt and the constraint its reply must meet.

    Attributes:
      id: a unique name, e.g. ``"number-03"``.
      kind: one of :data:`KINDS`.
      prompt: the user message.
      split: ``"train"`` or ``"heldout"``.
      answer: the integer a ``number`` prompt asks for.
      limit: the word limit of a ``max_words`` prompt.
    """

    id: str
    kind: str
    prompt: str
    split: str = "train"
    answer: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.id}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "number" and self.answer is None:
            raise ValueError(f"{self.id}: a 'number' prompt needs an integer 'answer'")
        if self.kind == "max_words" and (self.limit is None or self.limit < 1):
            raise ValueError(f"{self.id}: a 'max_words' prompt needs a positive 'limit'")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The judge's checks on one reply (check name -> passed), in a fixed order."""

    checks: tuple[tuple[str, bool], ...]

    @property
    def passed(self) -> bool:
        """Every check passed."""
        return all(ok for _, ok in self.checks)

    @property
    def credit(self) -> float:
        """The fraction of checks passed, in [0, 1]."""
        return sum(ok for _, ok in self.checks) / len(self.checks)


def _words(text: str) -> list[str]:
    return [piece for piece in text.split() if any(c.isalnum() for c in piece)]


def judge(prompt: Prompt, reply: str, *, finished: bool = True) -> Verdict:
    """Checks a decoded reply (special tokens removed) against the prompt's constraint.

    Args:
      prompt: the prompt and its constraint.
      reply: the model's reply text.
      finished: the model ended the reply itself (end token within the budget).

    Returns:
      The :class:`Verdict`.

    >>> p = Prompt("n", "number", "What is 7 + 5? Reply with only the number.", answer=12)
    >>> judge(p, "12").passed, round(judge(p, "7 + 5 = 12").credit, 3)
    (True, 0.667)
    >>> judge(Prompt("q", "question", "Ask me about my pet."), "Is it a cat?", finished=False)
    Verdict(checks=(('finished', False), ('ends_with_question_mark', True)))
    """
    text = reply.strip()
    checks: list[tuple[str, bool]] = [("finished", bool(finished))]
    if prompt.kind == "number":
        numbers = [int(n) for n in _INTEGER.findall(text)]
        checks += [
            ("bare_number", _BARE_INTEGER.fullmatch(text) is not None),
            ("right_answer", prompt.answer in numbers),
        ]
    elif prompt.kind == "one_word":
        checks.append(("one_word", len(_words(text)) == 1))
    elif prompt.kind == "max_words":
        checks.append((f"at_most_{prompt.limit}_words", 1 <= len(_words(text)) <= prompt.limit))
    elif prompt.kind == "lowercase":
        has_letters = any(c.isalpha() for c in text)
        checks.append(("lowercase", has_letters and not any(c.isupper() for c in text)))
    else:  # question
        checks.append(("ends_with_question_mark", text.endswith("?")))
    return Verdict(tuple(checks))


def judge_all(
    prompts: Sequence[Prompt], replies: Sequence[Sequence[str]], finished: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Credits and passes ``[n, K]`` of ``K`` replies to each of ``n`` prompts.

    Args:
      prompts: ``n`` prompts.
      replies: ``n`` lists of ``K`` reply texts.
      finished: bool ``[n, K]``, the reply ended with the end token.

    Returns:
      ``(credit, passed)``: float64 and bool arrays ``[n, K]``.
    """
    finished = np.asarray(finished, bool)
    verdicts = [
        [judge(p, r, finished=bool(f)) for r, f in zip(rs, fs, strict=True)]
        for p, rs, fs in zip(prompts, replies, finished, strict=True)
    ]
    credit = np.array([[v.credit for v in row] for row in verdicts], np.float64)
    passed = np.array([[v.passed for v in row] for row in verdicts], bool)
    return credit.reshape(finished.shape), passed.reshape(finished.shape)


def _prompt(record: dict[str, Any]) -> Prompt:
    fields = {f.name for f in dataclasses.fields(Prompt)}
    unknown = sorted(set(record) - fields)
    if unknown:
        raise ValueError(f"prompt record {record.get('id')!r} has unknown field(s) {unknown}")
    return Prompt(**record)


def read_prompts(path: str | os.PathLike[str] | Iterable[str]) -> list[Prompt]:
    """Reads :class:`Prompt` s from a JSON-lines file (or an iterable of lines).

    Raises:
      ValueError: an invalid record, an unknown field or a repeated id.
    """
    if isinstance(path, str | os.PathLike):
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    else:
        lines = list(path)
    prompts = [_prompt(json.loads(line)) for line in lines if line.strip()]
    ids = [p.id for p in prompts]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"repeated prompt ids: {repeated}")
    return prompts
