"""Loading a Hugging Face tokenizer from a local directory or from a GGUF file, offline.

:func:`load_tokenizer` returns a ``transformers`` fast tokenizer (``PreTrainedTokenizerFast``,
with ``apply_chat_template`` and ``eos_token_id``) and never touches the network.

* A directory (``tokenizer.json``, ``tokenizer_config.json``, ...) is read by
  ``AutoTokenizer.from_pretrained(directory, local_files_only=True)``.
* A ``.gguf`` file is converted by transformers' own GGUF support
  (``AutoTokenizer.from_pretrained(folder, gguf_file=name)``), which builds the tokenizer from
  the file's vocabulary, merges, token types, special token ids and chat template.

One correction is made to that conversion. For a byte-level BPE vocabulary whose
``tokenizer.ggml.pre`` is one of llama.cpp's "digits first" pre-tokenizers (``smollm``,
``starcoder``, ...: llama.cpp splits off every digit with ``\\p{N}`` before applying GPT-2's
regex), transformers 5 keeps GPT-2's regex alone. The ids then differ from the original
tokenizer wherever whitespace precedes a digit: SmolLM2's ``tokenizer.json`` pre-tokenizes with
``Digits(individual_digits=True)`` then ``ByteLevel``, so ``"line\\n    42"`` is
``line``, ``\\n`` + four spaces, ``4``, ``2``; GPT-2's regex alone would cut the indent in two.
For those files the pre-tokenizer is set to ``Digits(individual_digits=True)`` followed by
``ByteLevel``, which is llama.cpp's split and the original tokenizer's.

Padding: the file's or directory's pad token is kept (SmolLM2 pads with ``<|im_end|>``, which
is also its end-of-sequence token); a tokenizer without one gets its eos token as pad token.
Because the pad id may equal the eos id, build loss masks from the ``attention_mask`` the
tokenizer returns, never from ``input_ids != pad_token_id``.

``transformers`` and ``tokenizers`` are imported when a tokenizer is loaded, so this module
imports without the ``hf`` extra.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from jaxpref.models import gguf as _gguf

__all__ = ["load_tokenizer"]

# llama.cpp's `tokenizer.ggml.pre` values that split "\p{N}" (each digit alone) before GPT-2's
# regex (llama-vocab.cpp, the LLAMA_VOCAB_PRE_TYPE_{STARCODER,REFACT,COMMAND_R,SMOLLM,
# CODESHELL,EXAONE} group).
_DIGITS_FIRST_PRE_TOKENIZERS = frozenset(
    {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"}
)


def _digits_first_pre_tokenizer() -> Any:
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def _from_gguf(path: pathlib.Path) -> Any:
    from transformers import AutoTokenizer

    meta = _gguf.read_gguf_metadata(path)  # also checks that the file exists and is a GGUF
    tokenizer = AutoTokenizer.from_pretrained(
        path.parent, gguf_file=path.name, local_files_only=True
    )
    if (
        meta.get("tokenizer.ggml.model") == "gpt2"
        and meta.get("tokenizer.ggml.pre") in _DIGITS_FIRST_PRE_TOKENIZERS
    ):
        tokenizer.backend_tokenizer.pre_tokenizer = _digits_first_pre_tokenizer()
    return tokenizer


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """Loads a fast Hugging Face tokenizer from a local directory or a ``.gguf`` file.

    Nothing is downloaded: a directory must hold the tokenizer files, and a GGUF file its
    tokenizer metadata. See the module docstring for the GGUF conversion and the pad token.

    Args:
      path: a directory with ``tokenizer.json`` (and usually ``tokenizer_config.json``), or a
        ``.gguf`` file.

    Returns:
      A ``transformers.PreTrainedTokenizerFast`` with a pad token, ``eos_token_id`` and (when
      the source has one) a chat template for ``apply_chat_template``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: a file that is not a GGUF file.

    >>> from jaxpref.models.gguf import smollm2_gguf_path
    >>> tokenizer = load_tokenizer(smollm2_gguf_path())  # doctest: +SKIP
    >>> tokenizer.apply_chat_template(
    ...     [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    ... ).endswith("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n")  # doctest: +SKIP
    True
    """
    path = pathlib.Path(path)
    if path.is_dir():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    elif path.exists():
        tokenizer = _from_gguf(path)
    else:
        raise FileNotFoundError(f"no tokenizer directory or GGUF file at {path}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
