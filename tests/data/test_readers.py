"""Readers: every real format from a tiny fixture, every malformed case, skip counting."""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxpref.data import (
    FORMATS,
    REASONS,
    DataError,
    Message,
    PairwiseRecord,
    RankedRecord,
    ReadResult,
    ReadStats,
    UltraFeedbackFormat,
    UnpairedRecord,
    detect_format,
    iter_records,
    read_json,
    read_jsonl,
    read_parquet,
    read_records,
    read_rows,
)

U, A, S = "user", "assistant", "system"


def msgs(*turns):
    return [{"role": role, "content": content} for role, content in turns]


def conv(*turns):
    return tuple(Message(role, content) for role, content in turns)


def write_lines(path, rows, *, gz=False):
    """One JSON line per row; str/bytes rows are written verbatim (for malformed lines)."""
    lines = []
    for row in rows:
        if isinstance(row, bytes):
            lines.append(row)
        elif isinstance(row, str):
            lines.append(row.encode())
        else:
            lines.append(json.dumps(row).encode())
    data = b"\n".join(lines) + b"\n"
    (gzip.open if gz else open)(path, "wb").write(data)
    return path


def hh(*turns):
    """An HH-RLHF transcript from (speaker, text) turns."""
    return "".join(f"\n\n{speaker}: {text}" for speaker, text in turns)


def unlocated(records):
    """Records with ``source`` dropped, to compare against hand-written expectations."""
    return [r.__class__(**{**_fields(r), "source": None}) for r in records]


def _fields(record):
    return {k: v for k, v in vars(record).items() if k != "kind"}


# ---------------------------------------------------------------- each real format


def test_trl_standard_pairwise_with_optional_fields(tmp_path):
    path = write_lines(
        tmp_path / "std.jsonl",
        [
            {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {
                "prompt": "Capital of France?",
                "chosen": "Paris",
                "rejected": "Lyon",
                "score_chosen": 9.0,
                "score_rejected": 3,
                "strength": 0.9,
                "margin": 2.5,
                "rationale": "Paris is the capital.",
                "extra": "ignored",
            },
        ],
    )
    result = read_jsonl(path)
    assert isinstance(result, ReadResult) and result.format == "standard"
    assert result.skipped == Counter() and len(result) == 2
    assert unlocated(result) == [
        PairwiseRecord("2+2?", "4", "5"),
        PairwiseRecord(
            "Capital of France?",
            "Paris",
            "Lyon",
            strength=0.9,
            margin=2.5,
            chosen_score=9.0,
            rejected_score=3.0,
            rationale="Paris is the capital.",
        ),
    ]
    assert [r.source for r in result] == [f"{path}:1", f"{path}:2"]
    assert result.stats.rows == result.stats.records == 2


def test_trl_standard_and_conversational_unpaired(tmp_path):
    std = write_lines(
        tmp_path / "kto.jsonl",
        [
            {"prompt": "Hi", "completion": "Hello!", "label": True},
            {"prompt": "Hi", "completion": "Go away.", "label": False},
        ],
    )
    assert unlocated(read_jsonl(std, kind="unpaired")) == [
        UnpairedRecord("Hi", "Hello!", True),
        UnpairedRecord("Hi", "Go away.", False),
    ]
    chat = write_lines(
        tmp_path / "kto_chat.jsonl",
        [{"prompt": msgs((U, "Hi")), "completion": msgs((A, "Hello!")), "label": True}],
    )
    result = read_jsonl(chat, kind="unpaired")
    assert result.format == "conversational"
    assert unlocated(result) == [UnpairedRecord(conv((U, "Hi")), conv((A, "Hello!")), True)]


def test_trl_conversational_pairwise(tmp_path):
    path = write_lines(
        tmp_path / "chat.jsonl",
        [
            {
                "prompt": msgs((S, "Be terse."), (U, "2+2?")),
                "chosen": msgs((A, "4")),
                "rejected": msgs((A, "Five.")),
            }
        ],
    )
    result = read_jsonl(path)
    assert result.format == "conversational"
    assert unlocated(result) == [
        PairwiseRecord(conv((S, "Be terse."), (U, "2+2?")), conv((A, "4")), conv((A, "Five.")))
    ]


def test_implicit_prompt_text_and_conversational(tmp_path):
    path = write_lines(
        tmp_path / "implicit.jsonl",
        [
            {"chosen": "Q: Is the sky blue? A: yes it is", "rejected": "Q: Is the sky blue? A: no"},
            # The common prefix ends inside a word ("ye"): the split backs off to the space.
            {"chosen": "Say hi. yes", "rejected": "Say hi. yeah"},
        ],
    )
    result = read_jsonl(path)
    assert result.format == "implicit_prompt"
    assert unlocated(result) == [
        PairwiseRecord("Q: Is the sky blue? A:", " yes it is", " no"),
        PairwiseRecord("Say hi.", " yes", " yeah"),
    ]
    chat = write_lines(
        tmp_path / "implicit_chat.jsonl",
        [
            {
                "chosen": msgs((U, "Hi"), (A, "Hello"), (U, "Joke?"), (A, "A pun.")),
                "rejected": msgs((U, "Hi"), (A, "Hello"), (U, "Joke?"), (A, "No.")),
            }
        ],
    )
    assert unlocated(read_jsonl(chat, format="implicit_prompt")) == [
        PairwiseRecord(
            conv((U, "Hi"), (A, "Hello"), (U, "Joke?")), conv((A, "A pun.")), conv((A, "No."))
        )
    ]


def test_hh_rlhf_gzipped_transcripts(tmp_path):
    prompt = [("Human", "What is 2+2?"), ("Assistant", "4."), ("Human", "And 3+3?")]
    path = write_lines(
        tmp_path / "train.jsonl.gz",
        [
            {
                "chosen": hh(*prompt, ("Assistant", "6.")),
                "rejected": hh(*prompt, ("Assistant", "Seven.")),
            },
            {
                "chosen": hh(("Human", "Hi"), ("Assistant", "Hello")),
                "rejected": hh(("Human", "Hi"), ("Assistant", "What?")),
            },
        ],
        gz=True,
    )
    result = read_jsonl(path)
    assert result.format == "hh_rlhf"
    assert unlocated(result) == [
        PairwiseRecord(
            conv((U, "What is 2+2?"), (A, "4."), (U, "And 3+3?")),
            conv((A, "6.")),
            conv((A, "Seven.")),
        ),
        PairwiseRecord(conv((U, "Hi")), conv((A, "Hello")), conv((A, "What?"))),
    ]


def uf_row(instruction, *scored, key="overall_score"):
    return {
        "source": "evol_instruct",
        "instruction": instruction,
        "models": ["m"] * len(scored),
        "completions": [{"response": text, key: score, "model": "m"} for text, score in scored],
    }


def test_ultrafeedback_ranked_and_binarised(tmp_path, caplog):
    path = write_lines(
        tmp_path / "uf.jsonl",
        [
            uf_row("Write a haiku.", ("h1", 7.0), ("h2", 9.0), ("h3", 3.5), ("h4", 9.0)),
            uf_row("Say hi.", ("hi", 5.0), ("hello", 5.0)),  # all tied
            uf_row("Add 1+1.", ("2", 10), ("3", 1)),
        ],
    )
    ranked = read_jsonl(path, kind="ranked")
    assert ranked.format == "ultrafeedback" and ranked.skipped == Counter()
    assert unlocated(ranked) == [
        RankedRecord("Write a haiku.", ("h1", "h2", "h3", "h4"), scores=(7.0, 9.0, 3.5, 9.0)),
        RankedRecord("Say hi.", ("hi", "hello"), scores=(5.0, 5.0)),
        RankedRecord("Add 1+1.", ("2", "3"), scores=(10.0, 1.0)),
    ]
    caplog.set_level(logging.INFO, logger="jaxpref.data.readers")
    pairs = read_jsonl(path)  # skip_invalid=False: a tie is a policy drop, counted anyway
    # Best = first of the top score (h2), worst = h3.
    assert unlocated(pairs) == [
        PairwiseRecord("Write a haiku.", "h2", "h3", chosen_score=9.0, rejected_score=3.5),
        PairwiseRecord("Add 1+1.", "2", "3", chosen_score=10.0, rejected_score=1.0),
    ]
    assert pairs.skipped == Counter({"tie": 1})
    assert [r.source for r in pairs] == [f"{path}:1", f"{path}:3"]
    assert any("tie" in m and "skipped 1" in m for m in caplog.messages)

    random_pairs = [
        read_jsonl(path, format=UltraFeedbackFormat(policy="best_vs_random", seed=s))
        for s in range(8)
    ]
    rejected = {r[0].rejected for r in random_pairs}
    assert rejected <= {"h1", "h3"} and all(r[0].chosen == "h2" for r in random_pairs)
    again = read_jsonl(path, format=UltraFeedbackFormat(policy="best_vs_random", seed=3))
    assert again.records == random_pairs[3].records


def test_ultrafeedback_mean_rating(tmp_path):
    def completion(text, *ratings):
        aspects = ("helpfulness", "honesty", "truthfulness")
        notes = {
            a: {"Rating": r, "Rationale": "..."} for a, r in zip(aspects, ratings, strict=True)
        }
        return {"response": text, "annotations": notes, "overall_score": 5}

    row = {
        "instruction": "q",
        "completions": [completion("a", "5", "N/A", "4"), completion("b", "2", "3", "1")],
    }
    path = write_lines(tmp_path / "uf.jsonl", [row])
    result = read_jsonl(path, format=UltraFeedbackFormat(score="mean_rating"))
    assert unlocated(result) == [
        PairwiseRecord("q", "a", "b", chosen_score=4.5, rejected_score=2.0)
    ]


def test_shp_json_lines_named_dot_json(tmp_path):
    base = {
        "post_id": "p",
        "domain": "askculinary_train",
        "upvote_ratio": 0.9,
        "c_root_id_A": "a",
        "c_root_id_B": "b",
        "created_at_utc_A": 1,
        "created_at_utc_B": 2,
        "seconds_difference": 1.0,
        "score_ratio": 2.0,
    }
    path = write_lines(
        tmp_path / "train.json",
        [
            base
            | {
                "history": "Best pan?",
                "human_ref_A": "Cast iron.",
                "human_ref_B": "Any.",
                "labels": 1,
                "score_A": 40,
                "score_B": 20,
            },
            base
            | {
                "history": "Salt?",
                "human_ref_A": "No.",
                "human_ref_B": "Yes, always.",
                "labels": 0,
                "score_A": 2,
                "score_B": 12,
            },
        ],
    )
    result = read_json(path)
    assert result.format == "shp"
    assert unlocated(result) == [
        PairwiseRecord("Best pan?", "Cast iron.", "Any.", chosen_score=40.0, rejected_score=20.0),
        PairwiseRecord("Salt?", "Yes, always.", "No.", chosen_score=12.0, rejected_score=2.0),
    ]
    assert [r.source for r in result] == [f"{path}:1", f"{path}:2"]


def test_json_array_file(tmp_path):
    rows = [
        {"prompt": "a?", "chosen": "x", "rejected": "y"},
        {"prompt": "b?", "chosen": "z", "rejected": "w"},
    ]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(rows, indent=2))
    result = read_json(path)
    assert unlocated(result) == [PairwiseRecord("a?", "x", "y"), PairwiseRecord("b?", "z", "w")]
    assert [r.source for r in result] == [f"{path}:2", f"{path}:7"]  # where each element starts
    path.write_bytes(b"\xef\xbb\xbf  " + json.dumps(rows).encode())
    assert len(read_json(path)) == 2
    empty = tmp_path / "empty.json"
    empty.write_text("[ ]")
    assert len(read_json(empty)) == 0


def test_parquet_file_with_nested_conversations_and_nulls(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table(
            {
                "prompt": [msgs((U, "2+2?")), msgs((S, "s"), (U, "3+3?"))],
                "chosen": [msgs((A, "4")), msgs((A, "6"))],
                "rejected": [msgs((A, "5")), msgs((A, "7"))],
                "score_chosen": [1.0, None],
            }
        ),
        path,
    )
    result = read_parquet(path)
    assert result.format == "conversational"
    assert unlocated(result) == [
        PairwiseRecord(conv((U, "2+2?")), conv((A, "4")), conv((A, "5")), chosen_score=1.0),
        PairwiseRecord(conv((S, "s"), (U, "3+3?")), conv((A, "6")), conv((A, "7"))),
    ]
    assert [r.source for r in result] == [f"{path}[0]", f"{path}[1]"]


def test_jaxpref_native_ranked_and_unpaired(tmp_path):
    path = write_lines(
        tmp_path / "ranked.jsonl",
        [
            {"prompt": "q", "responses": ["a", "b", "c"], "scores": [1, 3, 3], "ranks": [2, 0, 1]},
            {"prompt": "q", "responses": ["a", "b"], "ranks": [1, 0]},
        ],
    )
    result = read_jsonl(path, kind="ranked")
    assert result.format == "jaxpref"
    assert unlocated(result) == [
        RankedRecord("q", ("a", "b", "c"), scores=(1.0, 3.0, 3.0), ranks=(2, 0, 1)),
        RankedRecord("q", ("a", "b"), ranks=(1, 0)),
    ]
    unpaired = write_lines(
        tmp_path / "unpaired.jsonl", [{"prompt": "q", "completion": "a", "desirable": False}]
    )
    assert unlocated(read_jsonl(unpaired, kind="unpaired")) == [UnpairedRecord("q", "a", False)]


def test_read_records_dispatches_on_suffix_and_iter_records_streams(tmp_path):
    row = {"prompt": "q", "chosen": "a", "rejected": "b"}
    write_lines(tmp_path / "a.jsonl.gz", [row], gz=True)
    (tmp_path / "a.json").write_text(json.dumps([row]))
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "a.parquet")
    for name in ("a.jsonl.gz", "a.json", "a.parquet"):
        assert unlocated(read_records(tmp_path / name)) == [PairwiseRecord("q", "a", "b")]
    stats = ReadStats(str(tmp_path / "a.jsonl.gz"))
    stream = iter_records(tmp_path / "a.jsonl.gz", stats=stats)
    assert stats.rows == 0  # lazy
    assert len(list(stream)) == 1 and (stats.rows, stats.records) == (1, 1)


def test_blank_lines_and_bom_are_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    row = json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}).encode()
    path.write_bytes(b"\xef\xbb\xbf" + row + b"\n\n  \n" + row + b"\n")
    result = read_jsonl(path)
    assert len(result) == 2 and result.stats.rows == 2
    assert [r.source for r in result] == [f"{path}:1", f"{path}:4"]


def test_read_rows_in_memory():
    result = read_rows(
        [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}],
        skip_invalid=True,
        source="hf:train",
    )
    assert [r.source for r in result] == ["hf:train[0]"]
    assert result.skipped == Counter({"missing_field": 1})
    assert "hf:train, row 1, field 'rejected'" in result.stats.examples["missing_field"]


@pytest.mark.parametrize(
    ("row", "name"),
    [
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "standard"),
        ({"prompt": "p", "completion": "a", "label": True}, "standard"),
        ({"prompt": msgs((U, "p")), "chosen": [], "rejected": []}, "conversational"),
        ({"chosen": "a b", "rejected": "a c"}, "implicit_prompt"),
        ({"chosen": msgs((U, "p")), "rejected": msgs((U, "p"))}, "implicit_prompt"),
        ({"chosen": "\n\nHuman: p\n\nAssistant: a", "rejected": "x"}, "hh_rlhf"),
        ({"instruction": "p", "completions": []}, "ultrafeedback"),
        ({"history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 1}, "shp"),
        ({"prompt": "p", "responses": ["a"], "scores": [1]}, "jaxpref"),
        ({"prompt": "p", "completion": "a", "desirable": True}, "jaxpref"),
    ],
)
def test_detect_format(row, name):
    assert detect_format(row).name == name


# ---------------------------------------------------------------- malformed records

VALID = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}
VALID_CHAT = {"prompt": msgs((U, "Hi")), "chosen": msgs((A, "Hello")), "rejected": msgs((A, "Go"))}
VALID_RANKED = {"prompt": "q", "responses": ["a", "b", "c"], "ranks": [0, 1, 2]}
VALID_HH = {
    "chosen": hh(("Human", "Hi"), ("Assistant", "Hello")),
    "rejected": hh(("Human", "Hi"), ("Assistant", "Go")),
}

MALFORMED = {
    # name: (rows; the bad one is on line 2), field, reason, message pattern, read options
    "invalid_json": (
        [VALID, '{"prompt": "q", "chosen": '],
        None,
        "invalid_json",
        "invalid JSON",
        {},
    ),
    "missing_field": (
        [VALID, {"prompt": "q", "chosen": "a"}],
        "rejected",
        "missing_field",
        "is missing",
        {},
    ),
    "null_field": (
        [VALID, {"prompt": "q", "chosen": None, "rejected": "b"}],
        "chosen",
        "missing_field",
        "is null",
        {},
    ),
    "wrong_type": (
        [VALID, {"prompt": "q", "chosen": 5, "rejected": "b"}],
        "chosen",
        "wrong_type",
        "expected a string, got int",
        {},
    ),
    "not_an_object": ([VALID, "[1, 2]"], None, "wrong_type", "expected a JSON object", {}),
    "empty_prompt": (
        [VALID, {"prompt": "  ", "chosen": "a", "rejected": "b"}],
        "prompt",
        "empty_text",
        "empty",
        {},
    ),
    "empty_response": (
        [VALID, {"prompt": "q", "chosen": "a", "rejected": ""}],
        "rejected",
        "empty_text",
        "empty",
        {},
    ),
    "identical": (
        [VALID, {"prompt": "q", "chosen": "same", "rejected": "same"}],
        "rejected",
        "identical_responses",
        "identical",
        {},
    ),
    "nan_score": (
        [VALID, '{"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": NaN}'],
        "score_chosen",
        "non_finite",
        "nan is not finite",
        {},
    ),
    "inf_score": (
        [VALID, '{"prompt": "q", "chosen": "a", "rejected": "b", "rejected_score": -Infinity}'],
        "rejected_score",
        "non_finite",
        "-inf is not finite",
        {},
    ),
    "nan_ranked_score": (
        [VALID_RANKED, '{"prompt": "q", "responses": ["a", "b"], "scores": [1.0, NaN]}'],
        "scores[1]",
        "non_finite",
        "not finite",
        {"kind": "ranked"},
    ),
    "ranks_not_permutation": (
        [VALID_RANKED, {"prompt": "q", "responses": ["a", "b", "c"], "ranks": [0, 2, 2]}],
        "ranks",
        "bad_ranks",
        r"permutation of 0\.\.2",
        {"kind": "ranked"},
    ),
    "non_utf8": (
        [VALID, b'{"prompt": "q", "chosen": "caf\xe9", "rejected": "b"}'],
        "chosen",
        "non_utf8",
        "not valid UTF-8: byte 0xe9",
        {},
    ),
    "roles_out_of_order": (
        [
            VALID_CHAT,
            {
                "prompt": msgs((U, "a"), (U, "b")),
                "chosen": msgs((A, "c")),
                "rejected": msgs((A, "d")),
            },
        ],
        "prompt[1].role",
        "role_order",
        "roles out of order: 'user' after 'user'",
        {},
    ),
    "response_not_assistant": (
        [
            VALID_CHAT,
            {"prompt": msgs((U, "a")), "chosen": msgs((U, "c")), "rejected": msgs((A, "d"))},
        ],
        "chosen[0].role",
        "role_order",
        "must start with an assistant turn",
        {},
    ),
    "unknown_role": (
        [
            VALID_CHAT,
            {"prompt": msgs(("robot", "a")), "chosen": msgs((A, "c")), "rejected": msgs((A, "d"))},
        ],
        "prompt[0].role",
        "unknown_role",
        "unknown role 'robot'",
        {},
    ),
    "hh_roles_out_of_order": (
        [
            VALID_HH,
            {
                "chosen": hh(("Human", "a"), ("Human", "b"), ("Assistant", "c")),
                "rejected": hh(("Human", "a"), ("Human", "b"), ("Assistant", "d")),
            },
        ],
        "chosen[1].role",
        "role_order",
        "'user' after 'user'",
        {},
    ),
    "hh_prompt_mismatch": (
        [
            VALID_HH,
            {
                "chosen": hh(("Human", "a"), ("Assistant", "c")),
                "rejected": hh(("Human", "b"), ("Assistant", "d")),
            },
        ],
        "rejected",
        "prompt_mismatch",
        "differ",
        {},
    ),
    "hh_empty_last_turn": (
        [
            VALID_HH,
            {
                "chosen": hh(("Human", "a"), ("Assistant", "c")),
                "rejected": hh(("Human", "a")) + "\n\nAssistant:",
            },
        ],
        "rejected",
        "empty_text",
        r"turn 1 \(Assistant\) is empty",
        {},
    ),
    "uf_score_type": (
        [uf_row("q", ("a", 1), ("b", 2)), uf_row("q", ("a", "high"), ("b", 2))],
        "completions[0].overall_score",
        "wrong_type",
        "expected a number",
        {},
    ),
    "shp_label": (
        [
            {"history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 1},
            {"history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 2},
        ],
        "labels",
        "out_of_range",
        "1 \\(A preferred\\) or 0",
        {},
    ),
    "jaxpref_wrong_kind_row": (
        [VALID_RANKED, {"prompt": "q", "completion": "a", "desirable": True}],
        "completion",
        "wrong_kind",
        "unpaired record, not ranked",
        {"kind": "ranked"},
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_rows_raise_naming_file_line_and_field(tmp_path, case):
    rows, field, reason, pattern, options = MALFORMED[case]
    path = write_lines(tmp_path / f"{case}.jsonl", rows)
    with pytest.raises(DataError) as info:
        read_jsonl(path, **options)
    err, message = info.value, str(info.value)
    assert (err.path, err.line, err.field, err.reason) == (str(path), 2, field, reason)
    assert message.startswith(f"{path}, line 2")
    if field is not None:
        assert f"field {field!r}" in message
    assert re.search(pattern, message), message
    assert reason in REASONS


def test_malformed_rows_are_skipped_counted_and_logged(tmp_path, caplog):
    cases = [c for c in MALFORMED if "wrong_kind" not in c and not MALFORMED[c][4]]
    rows = [VALID] + [MALFORMED[c][0][1] for c in cases if MALFORMED[c][0][0] is VALID]
    path = write_lines(tmp_path / "mixed.jsonl", rows)
    caplog.set_level(logging.DEBUG, logger="jaxpref.data.readers")
    result = read_jsonl(path, skip_invalid=True)
    expected = Counter(MALFORMED[c][2] for c in cases if MALFORMED[c][0][0] is VALID)
    assert len(result) == 1 and result.skipped == expected
    assert result.stats.rows == len(rows) and result.stats.records == 1
    assert set(result.stats.examples) == set(expected)
    skips = [r for r in caplog.records if r.getMessage().startswith("skipped (")]
    assert len(skips) == sum(expected.values())
    assert all(r.levelno == logging.WARNING for r in skips)
    summary = caplog.records[-1]
    assert summary.levelno == logging.WARNING
    assert f"skipped {sum(expected.values())}" in summary.getMessage()
    assert "missing_field=2" in summary.getMessage()  # missing + null


def test_a_row_of_another_kind_is_skippable(tmp_path):
    rows = [VALID_RANKED, {"prompt": "q", "completion": "a", "desirable": True}, VALID_RANKED]
    path = write_lines(tmp_path / "mixed.jsonl", rows)
    result = read_jsonl(path, kind="ranked", skip_invalid=True)
    assert len(result) == 2 and result.skipped == Counter({"wrong_kind": 1})


def test_skip_logging_is_bounded_per_reason(tmp_path, caplog):
    bad = {"prompt": "q", "chosen": "", "rejected": "b"}
    path = write_lines(tmp_path / "many.jsonl", [VALID] + [bad] * 8)
    caplog.set_level(logging.DEBUG, logger="jaxpref.data.readers")
    result = read_jsonl(path, skip_invalid=True)
    assert result.skipped == Counter({"empty_text": 8})
    levels = [r.levelno for r in caplog.records if r.getMessage().startswith("skipped (")]
    assert levels == [logging.WARNING] * 5 + [logging.DEBUG] * 3


def test_clean_read_reports_empty_counts_and_logs_info(tmp_path, caplog):
    path = write_lines(tmp_path / "ok.jsonl", [VALID])
    caplog.set_level(logging.INFO, logger="jaxpref.data.readers")
    result = read_jsonl(path, skip_invalid=True)
    assert result.skipped == Counter() and result.stats.examples == {}
    assert caplog.records[-1].levelno == logging.INFO
    assert caplog.records[-1].getMessage() == f"{path}: 1 records from 1 rows (format standard)"


def test_json_array_errors_name_line_and_row(tmp_path):
    path = tmp_path / "pairs.json"
    rows = [VALID, {"prompt": "q", "chosen": "", "rejected": "b"}]
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    with pytest.raises(DataError, match=re.escape(f"{path}, line 3 (row 1), field 'chosen'")):
        read_json(path)
    assert read_json(path, skip_invalid=True).skipped == Counter({"empty_text": 1})
    # A syntax error inside the array stops the read even with skip_invalid.
    path.write_text('[\n{"prompt": "q",\n "chosen": }\n]')
    with pytest.raises(DataError, match=re.escape(f"{path}, line 3 (row 0): invalid JSON")):
        read_json(path, skip_invalid=True)
    path.write_bytes(b'[\n{"prompt": "q", "chosen": "\xff", "rejected": "b"}\n]')
    with pytest.raises(DataError, match=r"line 2, field '\[0\]\.chosen': not valid UTF-8"):
        read_json(path, skip_invalid=True)


def test_parquet_errors_name_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([VALID, {**VALID, "rejected": "4"}]), path)
    with pytest.raises(DataError, match=re.escape(f"{path}, row 1, field 'rejected': chosen")):
        read_parquet(path)
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(DataError, match="not a Parquet file") as info:
        read_parquet(not_parquet, skip_invalid=True)
    assert info.value.reason == "invalid_file"


def test_format_and_kind_errors(tmp_path):
    path = write_lines(tmp_path / "std.jsonl", [VALID])
    with pytest.raises(DataError, match="unknown format 'trl'; known formats: auto, ") as info:
        read_jsonl(path, format="trl")
    assert str(path) in str(info.value)
    assert all(name in str(info.value) for name in FORMATS)
    # A kind the (detected) format cannot give stops the read, even with skip_invalid.
    with pytest.raises(DataError, match="detected format 'standard' gives pairwise or unpaired"):
        read_jsonl(path, kind="ranked", skip_invalid=True)
    with pytest.raises(DataError, match="format 'shp' gives pairwise records, not 'unpaired'"):
        read_jsonl(path, kind="unpaired", format="shp")
    with pytest.raises(DataError, match="unknown kind 'pairs'"):
        read_jsonl(path, kind="pairs")
    # An explicit format checks types strictly.
    with pytest.raises(DataError, match="field 'prompt': expected a list of messages, got str"):
        read_jsonl(path, format="conversational")
    # Fields matching no format.
    odd = write_lines(tmp_path / "odd.jsonl", [{"question": "q", "answer": "a"}, VALID])
    with pytest.raises(DataError, match=r"line 1: cannot detect the format from fields"):
        read_jsonl(odd)
    result = read_jsonl(odd, skip_invalid=True)
    assert result.skipped == Counter({"unknown_format": 1}) and result.format == "standard"
