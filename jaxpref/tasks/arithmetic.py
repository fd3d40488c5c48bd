"""Multi-digit addition with a programmatic judge: a preference task built entirely in code.

Tokens are characters (:data:`TOKENS`): padding, BOS, EOS, the ten digits, ``+`` and ``=``.
A problem ``(a, b)`` with ``num_digits``-digit operands is the prompt ``BOS a + b =`` with
the operands zero-padded (``07+45=``); its answer is the sum with ``num_digits + 1`` digits,
zero-padded, then EOS. With ``reverse=True`` (the default) the answer is written
least-significant digit first (``07+45=`` -> ``250`` EOS, i.e. 052 reversed): a
left-to-right model then produces each digit from two operand digits and the carry it has
just written, which a 2-layer model learns in about a thousand steps, in a sudden,
seed-dependent drop of the loss (Lee et al., Teaching Arithmetic to Small Transformers, 2023,
arXiv:2307.03381, on the reversed format).

The judge compares a completion with the answer token by token over the answer's
``num_digits + 2`` positions (its digits and the EOS): ``credit`` is the fraction of
positions right (partial credit in [0, 1]) and ``correct`` says all of them are. A
completion that stops early, runs on past the answer or writes another symbol loses the
positions it gets wrong.

Here: the vocabulary, the task (prompts, answers, the judge, a held-out split, a tiny model
config) and SFT examples. Sampling, greedy evaluation and preference data from judged
samples work on any task and live in :mod:`jaxpref.tasks.judged`.

>>> task = Addition()
>>> problems = np.array([[7, 45], [99, 99]])
>>> [decode(p) for p in task.prompts(problems)]
['07+45=', '99+99=']
>>> [decode(a) for a in task.answers(problems)]
['250', '891']
>>> judged = task.judge(problems, task.answers(problems))
>>> judged.credit.tolist(), judged.correct.tolist()
([1.0, 1.0], [True, True])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from jaxpref.data.tokenize import TokenizedExample
from jaxpref.models import TransformerConfig
from jaxpref.tasks.judged import Judgement, tokenized_example

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "TOKENS",
    "VOCAB_SIZE",
    "Addition",
    "decode",
    "encode",
    "sft_examples",
]

#: The vocabulary: id -> token. Ids 0-2 are special.
TOKENS = ("<pad>", "<bos>", "<eos>", *"0123456789", "+", "=")
PAD, BOS, EOS = 0, 1, 2
VOCAB_SIZE = len(TOKENS)
_IDS = {token: i for i, token in enumerate(TOKENS)}
_DIGIT0 = _IDS["0"]


def encode(text: str) -> np.ndarray:
    """The int32 ids of ``text``'s characters (digits, ``+``, ``=``; no special tokens).

    >>> encode("12+3=").tolist()
    [4, 5, 13, 6, 14]
    """
    try:
        return np.asarray([_IDS[c] for c in text], np.int32)
    except KeyError as error:
        raise ValueError(f"{text!r} has a character outside the vocabulary {TOKENS}") from error


def decode(ids: Sequence[int] | np.ndarray, *, special: bool = False) -> str:
    """The text of ``ids``; special tokens are dropped, or written (``<eos>``) if ``special``.

    >>> decode([1, 4, 13, 5, 14, 6, 2]), decode([6, 2, 0], special=True)
    ('1+2=3', '3<eos><pad>')
    """
    ids = np.asarray(ids).reshape(-1).tolist()
    return "".join(TOKENS[i] for i in ids if special or i > EOS)


@dataclasses.dataclass(frozen=True)
class Addition:
    """``num_digits``-digit addition; ``reverse`` writes answers least-significant digit first.

    Attributes:
      num_digits: digits of each operand (operands range over ``0 .. 10**num_digits - 1``).
      reverse: answer digits in reverse order (see the module docstring).
    """

    num_digits: int = 2
    reverse: bool = True

    eos_id: ClassVar[int] = EOS
    pad_id: ClassVar[int] = PAD

    def __post_init__(self) -> None:
        if not 1 <= self.num_digits <= 6:
            raise ValueError(f"num_digits must be in 1..6, got {self.num_digits}")

    @property
    def num_problems(self) -> int:
        """All ordered operand pairs."""
        return (10**self.num_digits) ** 2

    @property
    def prompt_length(self) -> int:
        """BOS, two operands, ``+`` and ``=``."""
        return 2 * self.num_digits + 3

    @property
    def answer_length(self) -> int:
        """Answer tokens: the sum's ``num_digits + 1`` digits and EOS."""
        return self.num_digits + 2

    @property
    def max_length(self) -> int:
        """Tokens of a prompt and its longest completion (:meth:`sample` writes at most
        :attr:`answer_length`)."""
        return self.prompt_length + self.answer_length

    def split(self, num_eval: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A held-out split of all problems: ``(train [N - num_eval, 2], eval [num_eval, 2])``.

        Both are int64 operand pairs in an order shuffled by ``seed``; they never share a
        problem.
        """
        if not 0 < num_eval < self.num_problems:
            raise ValueError(f"num_eval must be in 1..{self.num_problems - 1}, got {num_eval}")
        order = np.random.default_rng(seed).permutation(self.num_problems)
        side = 10**self.num_digits
        problems = np.stack([order // side, order % side], axis=-1)
        return problems[num_eval:], problems[:num_eval]

    def _digits(self, values: np.ndarray, width: int) -> np.ndarray:
        powers = 10 ** np.arange(width - 1, -1, -1)
        return (np.asarray(values)[..., None] // powers) % 10

    def prompts(self, problems: np.ndarray) -> np.ndarray:
        """int32 prompt ids ``[n, prompt_length]``: BOS, a, ``+``, b, ``=``."""
        problems = np.asarray(problems)
        n, d = len(problems), self.num_digits
        out = np.empty((n, self.prompt_length), np.int32)
        out[:, 0] = BOS
        out[:, 1 : 1 + d] = _DIGIT0 + self._digits(problems[:, 0], d)
        out[:, 1 + d] = _IDS["+"]
        out[:, 2 + d : 2 + 2 * d] = _DIGIT0 + self._digits(problems[:, 1], d)
        out[:, -1] = _IDS["="]
        return out

    def answers(self, problems: np.ndarray, *, carry: bool = True) -> np.ndarray:
        """int32 answer ids ``[n, answer_length]``: the sum's digits, then EOS.

        ``carry=False`` gives a sloppy answer that never carries: each digit is the operands'
        digit sum modulo 10 and the leading digit is 0 (``07+45=`` -> 042, written ``240``).
        """
        problems = np.asarray(problems)
        if carry:
            digits = self._digits(problems.sum(-1), self.num_digits + 1)
        else:
            width = self.num_digits + 1
            digits = (
                self._digits(problems[:, 0], width) + self._digits(problems[:, 1], width)
            ) % 10
        if self.reverse:
            digits = digits[:, ::-1]
        eos = np.full((len(problems), 1), EOS)
        return np.concatenate([_DIGIT0 + digits, eos], axis=1).astype(np.int32)

    def judge(
        self, problems: np.ndarray, tokens: np.ndarray, mask: np.ndarray | None = None
    ) -> Judgement:
        """Judges completions ``tokens [n, ..., L]`` of ``problems [n, 2]``.

        Args:
          problems: the operand pairs.
          tokens: completion ids (any number of completions per problem on middle axes);
            only the first ``answer_length`` positions are judged and missing ones are wrong.
          mask: True at generated tokens (``Generation.mask``); tokens outside it count as
            padding.

        Returns:
          A :class:`Judgement` of shape ``tokens.shape[:-1]``.
        """
        tokens = np.asarray(tokens)
        if mask is not None:
            tokens = np.where(mask, tokens, PAD)
        n = self.answer_length
        if tokens.shape[-1] < n:
            pad = [(0, 0)] * (tokens.ndim - 1) + [(0, n - tokens.shape[-1])]
            tokens = np.pad(tokens, pad, constant_values=PAD)
        answers = self.answers(problems)
        answers = answers.reshape(len(answers), *([1] * (tokens.ndim - 2)), n)
        right = tokens[..., :n] == answers
        return Judgement(credit=right.mean(-1), correct=right.all(-1))

    def model_config(self, **overrides: Any) -> TransformerConfig:
        """A tiny Llama-style config for this vocabulary and length (``tiny()`` + overrides)."""
        base = dict(
            vocab_size=VOCAB_SIZE,
            max_position_embeddings=max(32, self.max_length),
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=PAD,
        )
        return TransformerConfig.tiny(**{**base, **overrides})


def sft_examples(
    task: Addition, problems: np.ndarray, *, no_carry: float = 0.0, seed: int = 0
) -> list[TokenizedExample]:
    """Unpaired examples ``prompt + answer`` (trained on the answer and EOS), for ``"sft"``.

    Args:
      task: the task.
      problems: ``[n, 2]`` operand pairs.
      no_carry: the fraction of examples (an exact count, chosen by ``seed``) whose answer
        is the sloppy one that forgets every carry (:meth:`Addition.answers`), as a flawed
        demonstrator would write; 0 gives correct demonstrations only.
      seed: which examples are sloppy.

    >>> ex = sft_examples(Addition(), np.array([[7, 45]]))[0]
    >>> decode(ex.input_ids[0]), ex.response_mask[0].sum()
    ('07+45=250', np.int64(4))
    """
    if not 0.0 <= no_carry <= 1.0:
        raise ValueError(f"no_carry must be in [0, 1], got {no_carry}")
    problems = np.asarray(problems)
    sloppy = np.zeros(len(problems), bool)
    sloppy[
        np.random.default_rng(seed).permutation(len(problems))[: round(no_carry * len(problems))]
    ] = True
    prompts = task.prompts(problems)
    answers = np.where(sloppy[:, None], task.answers(problems, carry=False), task.answers(problems))
    return [
        tokenized_example("unpaired", p, [a], desirable=True)
        for p, a in zip(prompts, answers, strict=True)
    ]
