"""TFDS builders: built from tiny release-format files, read back without TensorFlow.

Each real builder reads files written here in the release's own layout, and what comes back
through ``tfds.data_source`` and a grain loader must equal what the jaxpref readers give for
the same files (the builders reuse them), with invalid rows counted in the metadata.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import math
import os
import sys

import pytest

tfds = pytest.importorskip("tensorflow_datasets")
grain = pytest.importorskip("grain")

from jaxpref.data import (  # noqa: E402
    DataError,
    Message,
    PairwiseRecord,
    RankedRecord,
    UltraFeedbackFormat,
    UnpairedRecord,
    read_json,
    read_jsonl,
    validate_record,
)
from jaxpref.data.tfds import (  # noqa: E402
    HhRlhf,
    Shp,
    Synthetic,
    UltraFeedback,
    example_to_record,
    features_for,
    record_dataset,
    record_to_example,
)


def test_tensorflow_is_not_installed():
    assert importlib.util.find_spec("tensorflow") is None
    assert "tensorflow" not in sys.modules


def _write(path, rows, *, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _hh(*turns):
    return "".join(f"\n\n{speaker}: {text}" for speaker, text in turns)


def _uf(instruction, *scored):
    completions = [{"response": t, "overall_score": s, "model": "m"} for t, s in scored]
    return {"source": "flan", "instruction": instruction, "completions": completions}


def _shp(history, a, b, label, score_a, score_b):
    return {
        "post_id": "x",
        "domain": "askculinary_train",
        "history": history,
        "human_ref_A": a,
        "human_ref_B": b,
        "labels": label,
        "score_A": score_a,
        "score_B": score_b,
    }


@pytest.fixture(scope="module")
def manual(tmp_path_factory):
    """Release-format files for HH-RLHF, UltraFeedback and SHP."""
    root = tmp_path_factory.mktemp("manual")
    hh = root / "hh" / "helpful-base"
    _write(
        hh / "train.jsonl.gz",
        [
            {
                "chosen": _hh(("Human", "Hi"), ("Assistant", "Hello!")),
                "rejected": _hh(("Human", "Hi"), ("Assistant", "Go away.")),
            },
            {
                "chosen": _hh(
                    ("Human", "2+2?"), ("Assistant", "4"), ("Human", "3+3?"), ("Assistant", "6")
                ),
                "rejected": _hh(
                    ("Human", "2+2?"), ("Assistant", "4"), ("Human", "3+3?"), ("Assistant", "7")
                ),
            },
            {  # invalid: empty final turn (as in a few rows of the real release)
                "chosen": _hh(("Human", "Hm"), ("Assistant", "Yes")),
                "rejected": _hh(("Human", "Hm")) + "\n\nAssistant:",
            },
        ],
        gz=True,
    )
    _write(
        hh / "test.jsonl.gz",
        [
            {
                "chosen": _hh(("Human", "Bye"), ("Assistant", "Goodbye!")),
                "rejected": _hh(("Human", "Bye"), ("Assistant", "Whatever.")),
            }
        ],
        gz=True,
    )
    _write(
        root / "uf" / "flan.jsonl",
        [
            _uf("Write a haiku.", ("h1", 7.0), ("h2", 9.0), ("h3", 3.5)),
            _uf("Say hi.", ("hi", 5.0), ("hello", 5.0)),  # tie: dropped when binarising
            _uf("Add 1+1.", ("2", 10.0), ("3", 1.0)),
        ],
    )
    _write(root / "uf" / "more" / "sharegpt.jsonl", [_uf("Bad.", ("x", "high"), ("y", 1.0))])
    domain = root / "shp" / "askculinary"
    _write(
        domain / "train.json",
        [_shp("Best pan?", "Cast iron.", "Any.", 1, 40, 20), _shp("Salt?", "No.", "Yes.", 0, 2, 9)],
    )
    _write(
        domain / "validation.json",
        [_shp("Oil?", "Olive.", "Olive.", 1, 3, 1), _shp("Pot?", "Steel.", "Clay.", 1, 4, 2)],
    )  # the first row is invalid: identical responses
    _write(domain / "test.json", [_shp("Knife?", "Chef's.", "Bread.", 0, 1, 5)])
    return root


def _build(builder_cls, config, data_dir, manual_dir=None):
    builder = builder_cls(config=config, data_dir=os.fspath(data_dir))
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
    )
    builder.download_and_prepare(download_config=download_config)
    assert builder.info.file_format.value == "array_record"
    return builder


def _data_source(builder, split, data_dir):
    return tfds.data_source(
        f"{builder.name}/{builder.builder_config.name}",
        split=split,
        data_dir=os.fspath(data_dir),
        download=False,
    )


class _ToRecord(grain.transforms.Map):
    def map(self, element):
        return example_to_record(element)


def _grain_records(source):
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shuffle=True, num_epochs=1, seed=0
    )
    loader = grain.DataLoader(
        data_source=source, sampler=sampler, operations=[_ToRecord()], worker_count=0
    )
    return list(loader)


def _expected(result, root):
    """Reader records with sources relative to ``root`` (as the builders store them)."""
    return [dataclasses.replace(r, source=os.path.relpath(r.source, root)) for r in result.records]


def _by_source(records):
    return sorted(records, key=lambda r: r.source)


def _check_split(builder, split, data_dir, expected):
    source = _data_source(builder, split, data_dir)
    assert len(source) == len(expected)
    from_source = [example_to_record(source[i]) for i in range(len(source))]
    assert _by_source(from_source) == _by_source(expected)
    assert _by_source(_grain_records(source)) == _by_source(expected)
    assert _by_source(list(record_dataset(source))) == _by_source(expected)


def test_hh_rlhf_builder(manual, tmp_path):
    root = manual / "hh"
    builder = _build(HhRlhf, "helpful-base", tmp_path, root)
    train = read_jsonl(root / "helpful-base" / "train.jsonl.gz", skip_invalid=True)
    assert dict(train.skipped) == {"empty_text": 1} and len(train) == 2
    test = read_jsonl(root / "helpful-base" / "test.jsonl.gz")
    _check_split(builder, "train", tmp_path, _expected(train, root))
    _check_split(builder, "test", tmp_path, _expected(test, root))
    splits = builder.info.metadata["splits"]
    assert splits["train"] == {"rows": 3, "records": 2, "skipped": {"empty_text": 1}}
    assert splits["test"] == {"rows": 1, "records": 1, "skipped": {}}
    # The metadata survives a fresh read-only builder.
    reread = tfds.builder_from_directory(builder.data_dir)
    assert reread.info.metadata["splits"]["train"]["skipped"] == {"empty_text": 1}
    # "all" finds the same files through the subset folder.
    everything = _build(HhRlhf, "all", tmp_path, root)
    assert everything.info.splits["train"].num_examples == 2


def test_ultrafeedback_builder_binarized_and_ranked(manual, tmp_path):
    root = manual / "uf"
    files = [root / "flan.jsonl", root / "more" / "sharegpt.jsonl"]
    for config, kind in (("binarized", "pairwise"), ("ranked", "ranked")):
        builder = _build(UltraFeedback, config, tmp_path, root)
        results = [
            read_jsonl(f, kind=kind, format=UltraFeedbackFormat(), skip_invalid=True) for f in files
        ]
        expected = [r for result in results for r in _expected(result, root)]
        _check_split(builder, "train", tmp_path, expected)
        stats = builder.info.metadata["splits"]["train"]
        skipped = {"wrong_type": 1} | ({"tie": 1} if kind == "pairwise" else {})
        assert stats == {"rows": 4, "records": 4 - sum(skipped.values()), "skipped": skipped}


def test_shp_builder(manual, tmp_path):
    root = manual / "shp"
    builder = _build(Shp, None, tmp_path, root)
    for split, skipped in (("train", {}), ("validation", {"identical_responses": 1}), ("test", {})):
        result = read_json(root / "askculinary" / f"{split}.json", skip_invalid=True)
        assert dict(result.skipped) == skipped
        assert builder.info.metadata["splits"][split]["skipped"] == skipped
        _check_split(builder, split, tmp_path, _expected(result, root))
    record = _by_source(example_to_record(e) for e in _data_source(builder, "train", tmp_path))[1]
    assert record == PairwiseRecord(
        "Salt?",
        "Yes.",
        "No.",
        chosen_score=9.0,
        rejected_score=2.0,
        source=os.path.join("askculinary", "train.json") + ":2",
    )


def test_manual_dir_without_files_is_an_error(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "README").write_text("nothing here")
    with pytest.raises(FileNotFoundError, match="no jaxpref_shp files"):
        _build(Shp, None, tmp_path / "data", tmp_path / "manual")


def test_split_without_valid_rows_is_an_error(tmp_path):
    _write(tmp_path / "manual" / "d" / "train.json", [_shp("Oil?", "Olive.", "Olive.", 1, 3, 1)])
    with pytest.raises(DataError, match=r"no valid records for split 'train'.*identical"):
        _build(Shp, None, tmp_path / "data", tmp_path / "manual")


@pytest.mark.parametrize("config", ["pairwise", "ranked", "unpaired"])
def test_synthetic_builder(tmp_path, config):
    builder = _build(Synthetic, config, tmp_path)
    assert builder.info.metadata["splits"]["train"] == {"rows": 64, "records": 64, "skipped": {}}
    source = _data_source(builder, "train", tmp_path)
    records = _grain_records(source)
    assert len(records) == 64 and len(_data_source(builder, "test", tmp_path)) == 16
    for record in records:
        assert record.kind == config and validate_record(record) is record
        a, b = (int(x) for x in record.prompt.removeprefix("What is ").rstrip("?").split(" + "))
        if isinstance(record, PairwiseRecord):
            error = abs(int(record.rejected) - (a + b))
            assert int(record.chosen) == a + b and record.margin == error
            assert record.strength == pytest.approx(1 / (1 + math.exp(-error)), rel=1e-6)
        elif isinstance(record, RankedRecord):
            errors = [abs(int(r) - (a + b)) for r in record.responses]
            assert record.scores == tuple(-float(e) for e in errors)
            best = record.responses[record.ranks.index(0)]
            assert int(best) == a + b
        else:
            assert isinstance(record, UnpairedRecord)
            assert (int(record.completion) == a + b) == record.desirable
    # Deterministic: a second build elsewhere gives the same examples.
    again = _build(Synthetic, config, tmp_path / "again")
    assert _by_source(_grain_records(_data_source(again, "train", tmp_path / "again"))) == (
        _by_source(records)
    )


def test_record_example_round_trip_and_unsupported_responses():
    user, hi = Message("user", "Hi"), Message("assistant", "Hello")
    records = [
        PairwiseRecord("q", "a", "b", strength=0.75, rationale="why", source="f:1"),
        PairwiseRecord((user,), (hi,), (Message("assistant", "Bye"),)),
        RankedRecord("q", ("a", "b"), ranks=(1, 0)),
        UnpairedRecord((user,), (hi,), True),
    ]
    for record in records:
        features = features_for(record.kind)
        example = features.decode_example_np(features.encode_example(record_to_example(record)))
        assert example_to_record(example) == record
    too_long = PairwiseRecord((user,), (hi, Message("user", "?"), hi), (hi,))
    with pytest.raises(DataError, match="one assistant message") as info:
        record_to_example(too_long)
    assert info.value.reason == "unsupported"
