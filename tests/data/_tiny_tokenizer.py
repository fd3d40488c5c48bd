"""A tiny byte-level BPE tokenizer with ChatML special tokens, built offline for the tests."""

from __future__ import annotations

import functools

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

#: ChatML: ``<|im_start|>{role}\n{content}<|im_end|>\n`` per message, then the generation
#: prompt ``<|im_start|>assistant\n``.
CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = (
    "The capital of France is Paris. The capital of Italy is Rome.",
    "You are a helpful assistant. What is the capital of France?",
    "Hello there, how are you? I am fine, thank you very much.",
    "user assistant system tool call result weather sunny today",
    "Once upon a time there was a small model that learned from preferences.",
    "0123456789 London Berlin Madrid answer question",
)


@functools.cache
def tiny_tokenizer(chat_template: str | None = CHATML):
    """A ``transformers.PreTrainedTokenizerFast``: EOS/pad ``<|endoftext|>`` (id 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        chat_template=chat_template,
    )
