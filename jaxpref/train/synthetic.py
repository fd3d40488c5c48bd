"""A synthetic token-level preference task, so the engine can run with no data files.

Prompts are random token runs; the chosen response repeats the prompt's first token, the
rejected one is random. A tiny model learns the preference in a few dozen steps, which makes
it a cheap end-to-end check of the whole engine (tests, crash-and-resume, benchmarks).
"""

from __future__ import annotations

import numpy as np

from jaxpref.data.tokenize import TokenizedExample


def synthetic_pairs(
    num_examples: int,
    *,
    vocab_size: int,
    prompt_length: int = 6,
    response_length: int = 6,
    seed: int = 0,
) -> list[TokenizedExample]:
    """``num_examples`` pairwise examples over token ids ``1..vocab_size-1`` (0 is padding).

    >>> examples = synthetic_pairs(2, vocab_size=32)
    >>> examples[0].kind, len(examples[0].input_ids), examples[0].prompt_length
    ('pairwise', 2, 6)
    """
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(num_examples):
        prompt = rng.integers(1, vocab_size, prompt_length)
        chosen = np.full(response_length, prompt[0])
        rejected = rng.integers(1, vocab_size, response_length)
        if np.array_equal(chosen, rejected):
            rejected[0] = (rejected[0] % (vocab_size - 1)) + 1
        sequences = tuple(
            np.concatenate([prompt, response]).astype(np.int32) for response in (chosen, rejected)
        )
        mask = np.concatenate([np.zeros(prompt_length, bool), np.ones(response_length, bool)])
        examples.append(
            TokenizedExample(
                kind="pairwise",
                input_ids=sequences,
                response_mask=(mask, mask.copy()),
                prompt_length=prompt_length,
                features={"strength": None, "margin": None, "scores": None},
                source=f"synthetic:{i}",
            )
        )
    return examples
