"""Tokenisation: loss masks under a chat template and for plain text, truncation, exclusion."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from jaxpref.data.records import DataError, Message, PairwiseRecord, RankedRecord, UnpairedRecord
from jaxpref.data.tokenize import TokenizeConfig, tokenize_record, tokenize_records
from tests.data._tiny_tokenizer import CHATML, tiny_tokenizer

SYSTEM = Message("system", "You are a helpful assistant.")
USER = Message("user", "What is the capital of France?")


def _parts(tok, ids, mask):
    """(trained text, untrained text) of one sequence."""
    return tok.decode(ids[mask]), tok.decode(ids[~mask])


def test_plain_text_masks_exactly_the_response_and_eos():
    tok = tiny_tokenizer()
    record = PairwiseRecord("The capital of France is", " Paris.", " Rome.", source="f:1")
    ex = tokenize_record(record, tok)
    assert ex.kind == "pairwise" and ex.num_sequences == 2
    prompt_ids = tok.encode("The capital of France is")
    for ids, mask, response in zip(
        ex.input_ids, ex.response_mask, (" Paris.", " Rome."), strict=True
    ):
        assert ids.dtype == np.int32 and mask.dtype == bool
        np.testing.assert_array_equal(ids[: ex.prompt_length], prompt_ids)
        assert not mask[: ex.prompt_length].any() and mask[ex.prompt_length :].all()
        assert _parts(tok, ids, mask) == (response + "<|endoftext|>", "The capital of France is")
    no_eos = tokenize_record(record, tok, TokenizeConfig(add_eos=False))
    assert _parts(tok, no_eos.input_ids[0], no_eos.response_mask[0])[0] == " Paris."


def test_conversation_masks_exactly_the_assistant_content_and_end_of_turn():
    tok = tiny_tokenizer()
    record = PairwiseRecord((SYSTEM, USER), "The capital of France is Paris.", "London.")
    ex = tokenize_record(record, tok)
    prompt_text = tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in (SYSTEM, USER)],
        tokenize=False,
        add_generation_prompt=True,
    )
    for ids, mask, answer in zip(
        ex.input_ids, ex.response_mask, ("The capital of France is Paris.", "London."), strict=True
    ):
        # The whole sequence is the template's rendering of the conversation.
        assert tok.decode(ids) == f"{prompt_text}{answer}<|im_end|>\n"
        assert tok.decode(ids[: ex.prompt_length]) == prompt_text
        # Exactly the content and the end-of-turn token are trained on; ChatML's trailing
        # newline stays in the sequence, untrained.
        trained = np.flatnonzero(mask)
        assert trained[0] == ex.prompt_length
        assert np.all(np.diff(trained) == 1)
        assert tok.decode(ids[mask]) == answer + "<|im_end|>"
        assert tok.decode(ids[trained[-1] + 1 :]) == "\n"


def test_multi_message_response_trains_on_assistant_turns_only():
    tok = tiny_tokenizer()
    response = (
        Message("assistant", "tool call weather"),
        Message("tool", "sunny"),
        Message("assistant", "It is sunny today."),
    )
    ex = tokenize_record(UnpairedRecord((USER,), response, desirable=True), tok)
    ids, mask = ex.input_ids[0], ex.response_mask[0]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    spans = [tok.decode(ids[a:b]) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    assert spans == ["tool call weather<|im_end|>", "It is sunny today.<|im_end|>"]


def test_text_prompt_with_conversational_response_is_a_user_turn():
    tok = tiny_tokenizer()
    ex = tokenize_record(
        UnpairedRecord("Hello there", (Message("assistant", "I am fine"),), desirable=False),
        tok,
    )
    ids, mask = ex.input_ids[0], ex.response_mask[0]
    assert tok.decode(ids[: ex.prompt_length]).startswith("<|im_start|>user\nHello there")
    assert tok.decode(ids[mask]) == "I am fine<|im_end|>"
    assert ex.features == {"desirable": False}


def test_ranked_record_has_one_sequence_per_response_in_order():
    tok = tiny_tokenizer()
    answers = ("Paris.", "Rome.", "London.")
    record = RankedRecord((USER,), answers, scores=(2.0, 1.0, 0.0))
    ex = tokenize_record(record, tok)
    assert ex.num_sequences == 3
    decoded = [tok.decode(i[m]) for i, m in zip(ex.input_ids, ex.response_mask, strict=True)]
    assert decoded == [a + "<|im_end|>" for a in answers]
    assert ex.features == {"scores": (2.0, 1.0, 0.0), "ranks": None}


def test_template_breaking_the_prefix_property_raises_naming_the_source():
    # The generation prompt says "bot", the rendered assistant turn says "assistant".
    bad = CHATML.replace("'<|im_start|>assistant\n'", "'<|im_start|>bot\n'")
    assert bad != CHATML
    record = PairwiseRecord((USER,), "Paris.", "Rome.", source="data.jsonl:7")
    with pytest.raises(DataError, match=r"data\.jsonl:7.*prefix property") as info:
        tokenize_record(record, tiny_tokenizer(bad))
    assert info.value.reason == "chat_template"


def test_token_merge_across_the_boundary_raises():
    # A generation prompt ending in a space: " Paris" is one token in the conversation,
    # but the prompt alone ends with a lone space token.
    spaced = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + ' ' + m['content'] "
        "+ '<|im_end|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant ' }}{% endif %}"
    )
    record = PairwiseRecord((USER,), "Paris.", "Rome.", source="data.jsonl:9")
    with pytest.raises(DataError, match=r"data\.jsonl:9.*token spans the boundary"):
        tokenize_record(record, tiny_tokenizer(spaced))


def test_conversation_without_chat_template_raises():
    record = PairwiseRecord((USER,), "Paris.", "Rome.", source="s:1")
    with pytest.raises(DataError, match="no chat_template"):
        tokenize_record(record, tiny_tokenizer(None))


def test_explicit_end_of_turn_tokens():
    tok = tiny_tokenizer()
    record = UnpairedRecord((USER,), "Paris.", desirable=True)
    # With an end-of-turn token that never occurs, the whole turn (newline too) is trained.
    ex = tokenize_record(record, tok, TokenizeConfig(end_of_turn=("<|endoftext|>",)))
    assert tok.decode(ex.input_ids[0][ex.response_mask[0]]) == "Paris.<|im_end|>\n"


def _prompt_record(n_words: int, response: str = " Paris.", source: str = "s") -> PairwiseRecord:
    prompt = " ".join(["capital"] * n_words)
    return PairwiseRecord(prompt, response, " Rome.", source=source)


def test_prompt_truncation_keeps_the_end_by_default_or_the_start():
    tok = tiny_tokenizer()
    record = PairwiseRecord("0 1 2 3 4 5 6 7 8 9", " Paris.", " Rome.")
    full = tokenize_record(record, tok)
    prompt = full.input_ids[0][: full.prompt_length]
    assert len(prompt) > 4
    end = tokenize_record(record, tok, TokenizeConfig(max_prompt_length=4))
    start = tokenize_record(record, tok, TokenizeConfig(max_prompt_length=4, prompt_keep="start"))
    np.testing.assert_array_equal(end.input_ids[0][:4], prompt[-4:])
    np.testing.assert_array_equal(start.input_ids[0][:4], prompt[:4])
    for ex in (end, start):
        assert ex.prompt_length == 4 and ex.truncated == {"prompt"}
        np.testing.assert_array_equal(ex.input_ids[0][4:], full.input_ids[0][full.prompt_length :])


def test_response_truncation_keeps_the_start_by_default_or_the_end():
    tok = tiny_tokenizer()
    record = PairwiseRecord("Hello", " Once upon a time there was a small model.", " Rome.")
    full = tokenize_record(record, tok)
    response = full.input_ids[0][full.prompt_length :]
    limit = len(full.input_ids[1])  # the rejected response fits exactly
    assert len(response) > limit - full.prompt_length > 1
    keep = limit - full.prompt_length
    start = tokenize_record(record, tok, TokenizeConfig(max_length=limit))
    end = tokenize_record(record, tok, TokenizeConfig(max_length=limit, response_keep="end"))
    np.testing.assert_array_equal(start.input_ids[0][full.prompt_length :], response[:keep])
    np.testing.assert_array_equal(end.input_ids[0][full.prompt_length :], response[-keep:])
    assert start.truncated == {"response"}
    np.testing.assert_array_equal(start.input_ids[1], full.input_ids[1])  # untouched


def test_truncation_counts_and_empty_responses_are_reported_not_trained(caplog):
    tok = tiny_tokenizer()
    short = tokenize_record(_prompt_record(2), tok)
    limit = short.prompt_length + 3
    config = TokenizeConfig(max_length=limit, add_eos=False)
    records = [
        _prompt_record(2, source="ok:1"),  # fits
        _prompt_record(2, " Once upon a time there was a model.", source="cut:2"),  # response cut
        _prompt_record(40, source="long:3"),  # prompt fills max_length: nothing left
        _prompt_record(2, "", source="empty:4"),  # no response token at all
        _prompt_record(41, source="long:5"),
    ]
    with caplog.at_level(logging.WARNING, logger="jaxpref.data.tokenize"):
        data = tokenize_records(records, tok, config)
    report = data.report
    assert (report.num_records, report.num_kept, len(data)) == (5, 2, 2)
    assert report.truncated == {"prompt": 0, "response": 1}
    assert report.excluded == {"truncated_to_empty": 2, "empty_response": 1}
    assert report.excluded_sources["truncated_to_empty"] == ("long:3", "long:5")
    np.testing.assert_array_equal(data.record_indices, [0, 1])
    assert [ex.source for ex in data] == ["ok:1", "cut:2"]
    assert all(len(ids) <= limit for ex in data for ids in ex.input_ids)
    assert "2 excluded (truncated_to_empty: long:3, long:5)" in caplog.text
    with pytest.raises(DataError, match="long:3") as info:
        tokenize_records(records, tok, config, strict=True)
    assert info.value.reason == "truncated_to_empty"


def test_mixed_kinds_and_bad_configs_raise():
    tok = tiny_tokenizer()
    records = [PairwiseRecord("a", "b", "c"), UnpairedRecord("a", "b", desirable=True)]
    with pytest.raises(DataError, match="mixed record kinds"):
        tokenize_records(records, tok)
    with pytest.raises(ValueError, match="max_prompt_length"):
        TokenizeConfig(max_prompt_length=8, max_length=8)
    with pytest.raises(ValueError, match="prompt_keep"):
        TokenizeConfig(prompt_keep="middle")  # type: ignore[arg-type]


class _CharsWithBos:
    """One token per character; BOS (1) added with the special tokens; EOS 2."""

    bos_token_id, eos_token_id = 1, 2

    def encode(self, text, add_special_tokens=True):
        return [1] * add_special_tokens + [ord(c) for c in text]


def test_keeping_the_prompt_end_keeps_a_leading_bos():
    record = PairwiseRecord("abcdef", "x", "y")
    config = TokenizeConfig(max_prompt_length=3)
    ex = tokenize_record(record, _CharsWithBos(), config)
    assert ex.input_ids[0].tolist() == [1, ord("e"), ord("f"), ord("x"), 2]
    start = tokenize_record(
        record, _CharsWithBos(), TokenizeConfig(max_prompt_length=3, prompt_keep="start")
    )
    assert start.input_ids[0].tolist() == [1, ord("a"), ord("b"), ord("x"), 2]
