"""Record types, DataError, and validate_record on records built in code."""

from __future__ import annotations

import math

import pytest

from jaxpref.data import (
    REASONS,
    DataError,
    Message,
    PairwiseRecord,
    RankedRecord,
    UnpairedRecord,
    is_conversation,
    validate_record,
)
from jaxpref.data.validate import as_bool, as_float, as_int, as_messages, check_role_order

U, A, S, T = "user", "assistant", "system", "tool"


def conv(*turns: tuple[str, str]) -> tuple[Message, ...]:
    return tuple(Message(role, content) for role, content in turns)


def assert_invalid(record, *, field: str, reason: str, match: str, names=None) -> DataError:
    with pytest.raises(DataError, match=match) as info:
        validate_record(record, names=names)
    err = info.value
    assert (err.field, err.reason) == (field, reason)
    assert reason in REASONS
    assert f"field {field!r}" in str(err)
    return err


def test_data_error_message_names_file_line_row_and_field():
    err = DataError("empty text", path="d/x.jsonl", line=7, field="chosen", reason="empty_text")
    assert str(err) == "d/x.jsonl, line 7, field 'chosen': empty text"
    assert (err.path, err.line, err.row, err.field, err.reason, err.detail) == (
        "d/x.jsonl",
        7,
        None,
        "chosen",
        "empty_text",
        "empty text",
    )
    assert str(DataError("bad", path="t.parquet", row=3)) == "t.parquet, row 3: bad"
    assert str(DataError("bad", path="a.json", line=5, row=2)) == "a.json, line 5 (row 2): bad"
    assert str(DataError("bad")) == "bad"
    assert isinstance(err, ValueError)


def test_locate_fills_only_missing_parts():
    err = DataError("empty text", field="prompt", reason="empty_text")
    located = err.locate(path="f.jsonl", line=3)
    assert str(located) == "f.jsonl, line 3, field 'prompt': empty text"
    assert located.reason == "empty_text"
    kept = DataError("x", path="orig.json", line=9).locate(path="other", line=1)
    assert (kept.path, kept.line) == ("orig.json", 9)


def test_valid_records_pass_unchanged():
    records = [
        PairwiseRecord("2+2?", "4", "5", strength=1.0, margin=0.5, chosen_score=1, rationale="r"),
        PairwiseRecord(conv((S, "Be brief."), (U, "Hi")), conv((A, "Hello")), conv((A, "Go"))),
        RankedRecord("q", ("a", "b", "c"), scores=(1.0, 1.0, 0.0), ranks=(1, 0, 2)),
        RankedRecord("q", ("a", "b"), ranks=(1, 0)),
        UnpairedRecord(conv((U, "Hi")), conv((A, "Hello")), desirable=False),
        # Tool calls inside a response: assistant -> tool -> assistant.
        PairwiseRecord(
            conv((U, "Weather?")), conv((A, "call"), (T, "sun"), (A, "Sunny")), conv((A, "?"))
        ),
    ]
    for record in records:
        assert validate_record(record) is record
    assert is_conversation(records[1].prompt) and not is_conversation(records[0].prompt)
    assert [r.kind for r in records[:5]] == ["pairwise", "pairwise", "ranked", "ranked", "unpaired"]


def test_identical_responses():
    assert_invalid(
        PairwiseRecord("q", "same ", " same"),
        field="rejected",
        reason="identical_responses",
        match="identical",
    )
    assert_invalid(
        PairwiseRecord(conv((U, "q")), conv((A, "x")), conv((A, "x"))),
        field="rejected",
        reason="identical_responses",
        match="identical",
    )


@pytest.mark.parametrize(
    ("record", "field"),
    [
        (PairwiseRecord("", "a", "b"), "prompt"),
        (PairwiseRecord(" \n", "a", "b"), "prompt"),
        (PairwiseRecord("q", "a", "\t"), "rejected"),
        (UnpairedRecord("q", "", True), "completion"),
        (RankedRecord("q", ("a", ""), scores=(1.0, 0.0)), "responses[1]"),
        (PairwiseRecord(conv((U, "")), conv((A, "a")), conv((A, "b"))), "prompt[0].content"),
        (PairwiseRecord((), conv((A, "a")), conv((A, "b"))), "prompt"),
    ],
)
def test_empty_text(record, field):
    assert_invalid(record, field=field, reason="empty_text", match="empty")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["strength", "margin", "chosen_score", "rejected_score"])
def test_non_finite_scalars(bad, field):
    record = PairwiseRecord("q", "a", "b", **{field: bad})
    assert_invalid(record, field=field, reason="non_finite", match="not finite")


def test_non_finite_ranked_score_and_range_and_types():
    assert_invalid(
        RankedRecord("q", ("a", "b"), scores=(1.0, math.nan)),
        field="scores[1]",
        reason="non_finite",
        match="not finite",
    )
    assert_invalid(
        PairwiseRecord("q", "a", "b", strength=1.5),
        field="strength",
        reason="out_of_range",
        match=r"outside \[0.0, 1.0\]",
    )
    assert_invalid(
        PairwiseRecord("q", "a", "b", margin=True),
        field="margin",
        reason="wrong_type",
        match="expected a number, got bool",
    )
    assert_invalid(
        PairwiseRecord("q", 3, "b"), field="chosen", reason="wrong_type", match="got int"
    )
    assert_invalid(
        UnpairedRecord("q", "a", 1), field="desirable", reason="wrong_type", match="true or false"
    )


@pytest.mark.parametrize(
    "ranks", [(0, 0, 1), (1, 2, 3), (0, 1, 5), (-1, 0, 1)], ids=["tie", "1-based", "gap", "neg"]
)
def test_ranks_must_be_a_permutation(ranks):
    err = assert_invalid(
        RankedRecord("q", ("a", "b", "c"), ranks=ranks),
        field="ranks",
        reason="bad_ranks",
        match=r"permutation of 0\.\.2",
    )
    assert str(list(ranks)) in str(err)


def test_ranked_structure():
    assert_invalid(
        RankedRecord("q", ("a",), scores=(1.0,)),
        field="responses",
        reason="too_few_responses",
        match="at least 2",
    )
    assert_invalid(
        RankedRecord("q", ("a", "b")), field="scores", reason="missing_field", match="scores or"
    )
    assert_invalid(
        RankedRecord("q", ("a", "b"), scores=(1.0,)),
        field="scores",
        reason="inconsistent",
        match="1 entries for 2",
    )
    assert_invalid(
        RankedRecord("q", ("a", "b"), ranks=(0.0, 1.0)),
        field="ranks[0]",
        reason="wrong_type",
        match="integer",
    )
    assert_invalid(
        RankedRecord("q", ("a", "b"), scores=(1.0, 2.0), ranks=(0, 1)),
        field="ranks",
        reason="inconsistent",
        match="ranked above",
    )


@pytest.mark.parametrize(
    ("prompt", "response", "field", "match"),
    [
        (conv((U, "a"), (U, "b")), conv((A, "c")), "prompt[1].role", "'user' after 'user'"),
        (conv((A, "a")), conv((A, "c")), "prompt[0].role", "'assistant' at the start"),
        (conv((U, "a"), (S, "b")), conv((A, "c")), "prompt[1].role", "'system' after 'user'"),
        (conv((U, "a"), (A, "b")), conv((A, "c")), "chosen[0].role", "'assistant' after"),
        (conv((U, "a")), conv((U, "c")), "chosen[0].role", "must start with an assistant"),
        (conv((U, "a")), conv((A, "c"), (T, "t")), "chosen[1].role", "must end with an assistant"),
        (conv((S, "a")), conv((A, "c")), "chosen[0].role", "'assistant' after 'system'"),
    ],
)
def test_roles_out_of_order(prompt, response, field, match):
    record = PairwiseRecord(prompt, response, conv((A, "other")))
    assert_invalid(record, field=field, reason="role_order", match=match)


def test_text_and_conversation_do_not_mix():
    assert_invalid(
        PairwiseRecord(conv((U, "q")), "text", conv((A, "b"))),
        field="chosen",
        reason="inconsistent",
        match="the prompt is a conversation",
    )
    assert_invalid(
        UnpairedRecord("q", conv((A, "b")), True),
        field="completion",
        reason="inconsistent",
        match="plain text",
    )


def test_names_map_fields_to_source_names():
    assert_invalid(
        PairwiseRecord("h", "x", "x"),
        names={"rejected": "human_ref_B"},
        field="human_ref_B",
        reason="identical_responses",
        match="identical",
    )


def test_value_helpers():
    assert as_float(3, "s") == 3.0 and isinstance(as_float(3, "s"), float)
    assert as_int(4, "r") == 4
    assert as_bool(False, "d") is False
    assert as_messages([{"role": "user", "content": "hi", "name": "x"}], "p") == conv((U, "hi"))
    for value, reason in [
        ([{"role": "robot", "content": "x"}], "unknown_role"),
        ([{"content": "x"}], "missing_field"),
        (["hi"], "wrong_type"),
        ("hi", "wrong_type"),
    ]:
        with pytest.raises(DataError) as info:
            as_messages(value, "p")
        assert info.value.reason == reason
    check_role_order(("p", conv((S, "s"), (U, "u"), (A, "a"), (T, "t"), (T, "t"), (A, "a"))))
