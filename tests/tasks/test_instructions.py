"""The format-constraint judge on hand-written replies, and the shipped prompt set."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

from jaxpref.tasks import instructions as I

PROMPT_SET = pathlib.Path(__file__).resolve().parents[2] / "experiments/data/smollm2_prompts.jsonl"

NUMBER = I.Prompt("n", "number", "What is 7 + 5? Reply with only the number.", answer=12)
ONE_WORD = I.Prompt("w", "one_word", "Name a fruit. Answer with one word.")
MAX_WORDS = I.Prompt("m", "max_words", "Describe the sea in at most 4 words.", limit=4)
LOWER = I.Prompt("l", "lowercase", "Write one short sentence about tea, in lowercase.")
QUESTION = I.Prompt("q", "question", "Ask me one short question about my pet.")


@pytest.mark.parametrize(
    ("prompt", "reply", "passed", "credit"),
    [
        (NUMBER, "12", True, 1.0),
        (NUMBER, " 12.\n", True, 1.0),
        (NUMBER, "-12", False, 2 / 3),  # a bare number, but the wrong one
        (NUMBER, "7 + 5 = 12", False, 2 / 3),
        (NUMBER, "The answer is twelve.", False, 1 / 3),
        (NUMBER, "13", False, 2 / 3),
        (NUMBER, "120", False, 2 / 3),  # 12 must appear as a whole number
        (ONE_WORD, "Banana", True, 1.0),
        (ONE_WORD, "Banana.", True, 1.0),
        (ONE_WORD, "A banana.", False, 0.5),
        (ONE_WORD, "", False, 0.5),
        (MAX_WORDS, "Vast, blue, restless.", True, 1.0),
        (MAX_WORDS, "The sea is deep blue.", False, 0.5),  # five words
        (MAX_WORDS, "Deep - blue - sea - calm", True, 1.0),  # dashes are not words
        (MAX_WORDS, "  ", False, 0.5),
        (LOWER, "tea is warm and calming.", True, 1.0),
        (LOWER, "Tea is warm.", False, 0.5),
        (LOWER, "123 ...", False, 0.5),  # no letters at all
        (QUESTION, "What is your pet's name?", True, 1.0),
        (QUESTION, "What is your pet's name? ", True, 1.0),
        (QUESTION, "Tell me about your pet.", False, 0.5),
    ],
)
def test_judge_on_hand_written_replies(prompt, reply, passed, credit):
    verdict = I.judge(prompt, reply)
    assert verdict.passed is passed
    assert verdict.credit == pytest.approx(credit)


def test_an_unfinished_reply_fails_but_keeps_partial_credit():
    verdict = I.judge(NUMBER, "12", finished=False)
    assert not verdict.passed
    assert verdict.credit == pytest.approx(2 / 3)
    assert dict(verdict.checks) == {"finished": False, "bare_number": True, "right_answer": True}


def test_judge_all_shapes_and_values():
    credit, passed = I.judge_all(
        [NUMBER, QUESTION],
        [["12", "7 + 5 = 12", "12"], ["Why?", "No.", "Why?"]],
        np.array([[True, True, False], [True, True, True]]),
    )
    np.testing.assert_allclose(credit, [[1, 2 / 3, 2 / 3], [1, 0.5, 1]])
    np.testing.assert_array_equal(passed, [[True, False, False], [True, False, True]])
    assert credit.dtype == np.float64 and passed.dtype == bool


def test_invalid_prompts_are_refused():
    with pytest.raises(ValueError, match="kind"):
        I.Prompt("x", "haiku", "Write a haiku.")
    with pytest.raises(ValueError, match="answer"):
        I.Prompt("x", "number", "What is 1 + 1?")
    with pytest.raises(ValueError, match="limit"):
        I.Prompt("x", "max_words", "Describe rain in at most 0 words.", limit=0)
    line = json.dumps({"id": "a", "kind": "question", "prompt": "Ask me."})
    with pytest.raises(ValueError, match="repeated"):
        I.read_prompts([line, line])
    with pytest.raises(ValueError, match="unknown field"):
        I.read_prompts([json.dumps({"id": "a", "kind": "question", "prompt": "?", "n": 1})])


def test_the_shipped_prompt_set():
    prompts = I.read_prompts(PROMPT_SET)
    assert len(prompts) == 200
    for split in ("train", "heldout"):
        kinds = {p.kind for p in prompts if p.split == split}
        assert kinds == set(I.KINDS), split
    assert {p.split for p in prompts} == {"train", "heldout"}
    texts = [p.prompt for p in prompts]
    assert len(set(texts)) == len(texts)  # no prompt is both trained on and held out
    for p in prompts:
        if p.kind == "number":  # the stated arithmetic gives the stored answer
            a, b = (int(x) for x in re.findall(r"\d+", p.prompt))
            plus = "plus" in p.prompt or "+" in p.prompt
            assert p.answer == (a + b if plus else a - b), p
