"""The addition task: tokens, answers and the judge against independent string arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from jaxpref.data import BatchIterator
from jaxpref.tasks import arithmetic as A


def problems_with_edges(num_digits, n=200, seed=0):
    top = 10**num_digits - 1
    edges = [[0, 0], [top, top], [top, 1], [5, 5], [0, top]]
    rng = np.random.default_rng(seed)
    return np.concatenate([np.array(edges), rng.integers(0, top + 1, (n, 2))])


@pytest.mark.parametrize("num_digits", [1, 2, 3])
@pytest.mark.parametrize("reverse", [True, False])
def test_prompts_and_answers_are_the_sums_as_text(num_digits, reverse):
    task = A.Addition(num_digits=num_digits, reverse=reverse)
    problems = problems_with_edges(num_digits)
    prompts, answers = task.prompts(problems), task.answers(problems)
    assert prompts.shape == (len(problems), task.prompt_length)
    assert answers.shape == (len(problems), task.answer_length)
    assert (prompts[:, 0] == A.BOS).all() and (answers[:, -1] == A.EOS).all()
    for (a, b), prompt, answer in zip(problems, prompts, answers, strict=True):
        assert A.decode(prompt) == f"{a:0{num_digits}d}+{b:0{num_digits}d}="
        text = A.decode(answer)
        assert int(text[::-1] if reverse else text) == a + b
        assert len(text) == num_digits + 1


def test_sloppy_answers_forget_every_carry():
    task = A.Addition(num_digits=3)
    problems = problems_with_edges(3)
    for (a, b), answer in zip(problems, task.answers(problems, carry=False), strict=True):
        x, y = f"{a:04d}", f"{b:04d}"
        expected = "".join(str((int(p) + int(q)) % 10) for p, q in zip(x, y, strict=True))
        assert A.decode(answer) == expected[::-1]


def test_encode_decode():
    assert A.decode(A.encode("12+34=")) == "12+34="
    assert A.decode([A.BOS, *A.encode("1"), A.EOS, A.PAD], special=True) == "<bos>1<eos><pad>"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        A.encode("1-2")


def test_split_is_a_disjoint_cover_fixed_by_the_seed():
    task = A.Addition(num_digits=2)
    train, held_out = task.split(300, seed=3)
    assert len(held_out) == 300 and len(train) == task.num_problems - 300
    codes = lambda p: set((p[:, 0] * 100 + p[:, 1]).tolist())
    assert not codes(train) & codes(held_out)
    assert codes(train) | codes(held_out) == set(range(task.num_problems))
    np.testing.assert_array_equal(task.split(300, seed=3)[1], held_out)
    assert codes(task.split(300, seed=4)[1]) != codes(held_out)
    with pytest.raises(ValueError):
        task.split(0, seed=0)


def test_judge_gives_credit_per_position():
    task = A.Addition(num_digits=2)
    problems = np.array([[7, 45]] * 5)  # answer "250" EOS
    d = lambda s: list(A.encode(s))
    tokens = np.array(
        [
            [*d("250"), A.EOS],  # right
            [*d("240"), A.EOS],  # forgot the carry: 3 of 4 positions
            [*d("25"), A.EOS, A.PAD],  # stopped early: 2 of 4
            [*d("2501")],  # never stopped: 3 of 4
            [*d("250"), A.EOS],  # right, but masked after the first token: 1 of 4
        ]
    )
    mask = np.ones_like(tokens, bool)
    mask[4, 1:] = False
    judged = task.judge(problems, tokens, mask)
    np.testing.assert_allclose(judged.credit, [1.0, 0.75, 0.5, 0.75, 0.25])
    assert judged.correct.tolist() == [True, False, False, False, False]
    # K samples per problem on a middle axis; shorter completions count as missing positions.
    many = task.judge(problems[:2], np.stack([tokens[:2], tokens[:2, ::-1]], axis=1)[..., :3])
    assert many.credit.shape == (2, 2)
    np.testing.assert_allclose(many.credit[:, 0], [0.75, 0.5])


def test_sft_examples_train_on_the_answer_only():
    task = A.Addition(num_digits=2)
    rng = np.random.default_rng(0)
    units = rng.integers(5, 10, (100, 2))  # units digits summing to >= 10: always a carry
    problems = 10 * rng.integers(0, 10, (100, 2)) + units
    examples = A.sft_examples(task, problems, no_carry=0.3, seed=1)
    sloppy = []
    for (a, b), ex in zip(problems, examples, strict=True):
        assert ex.kind == "unpaired" and ex.prompt_length == task.prompt_length
        (ids,), (mask,) = ex.input_ids, ex.response_mask
        assert mask.tolist() == [False] * task.prompt_length + [True] * task.answer_length
        assert ids[-1] == A.EOS
        sloppy.append(A.decode(ids[mask])[::-1] != f"{a + b:03d}")
    assert sum(sloppy) == 30  # an exact count
    other = A.sft_examples(task, problems, no_carry=0.3, seed=2)
    assert [a.input_ids[0].tolist() for a in other] != [a.input_ids[0].tolist() for a in examples]
    assert len(next(iter(BatchIterator(examples, batch_size=4, seed=0)))["input_ids"]) == 4
    with pytest.raises(ValueError):
        A.sft_examples(task, problems, no_carry=1.5)
