"""The reference log-prob cache: reuse, invalidation, atomic writes, attaching to batches."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from jaxpref.data import refcache
from jaxpref.data.iterator import BatchIterator
from jaxpref.data.records import Message, PairwiseRecord, RankedRecord, UnpairedRecord
from jaxpref.data.refcache import (
    attach_reference_logps,
    cached_reference_logps,
    fingerprint_params,
    fingerprint_records,
    fingerprint_tokenizer,
)
from jaxpref.data.tokenize import TokenizeConfig, tokenize_records
from tests.data._tiny_tokenizer import CHATML, tiny_tokenizer

USER = Message("user", "What is the capital of France?")
RECORDS = [
    PairwiseRecord((USER,), "The capital of France is Paris.", "London."),
    PairwiseRecord((USER,), "Paris.", "Rome, the capital of Italy."),
    PairwiseRecord((USER,), "It is Paris.", "Berlin."),
]


class CountingLogp:
    """A stand-in reference model: -0.01 * (target + 1) summed over trained tokens.

    Depends only on each sequence's content, not on padding, buckets or packing.
    """

    def __init__(self, scale: float = 1.0):
        self.calls, self.scale = 0, scale

    def __call__(self, batch):
        self.calls += 1
        token = np.where(batch["loss_mask"], -0.01 * self.scale * (batch["targets"] + 1), 0.0)
        if "segment_ids" not in batch:
            return token.sum(-1)
        segments = batch["example_index"].shape[-1]
        onehot = batch["segment_ids"][..., None] == np.arange(1, segments + 1)
        per_segment = np.einsum("...t,...ts->...s", token, onehot)  # [B, (I,) S]
        return np.moveaxis(per_segment, -1, 1)  # [B, S, (I)]


def _expected(examples, scale=1.0):
    return np.array(
        [
            [
                -0.01 * scale * (ids[1:][m[1:]] + 1).sum()
                for ids, m in zip(e.input_ids, e.response_mask, strict=True)
            ]
            for e in examples
        ],
        np.float32,
    )


def _run(tmp_path, data, fn, *, model="model-a", tok=None, config=None, **kwargs):
    tok = tiny_tokenizer() if tok is None else tok
    return cached_reference_logps(
        data,
        fn,
        cache_dir=tmp_path,
        model_id=model,
        tokenizer_id=fingerprint_tokenizer(tok),
        config=config,
        dataset_id=fingerprint_records(RECORDS),
        batch_size=2,
        **kwargs,
    )


def test_second_run_reuses_the_cache_without_calling_logp_fn(tmp_path):
    data = tokenize_records(RECORDS, tiny_tokenizer())
    fn = CountingLogp()
    first = _run(tmp_path, data, fn)
    assert fn.calls == 2  # 3 examples in batches of 2
    assert first.shape == (3, 2) and first.dtype == np.float32
    np.testing.assert_allclose(first, _expected(data), rtol=1e-6)
    fn2 = CountingLogp()
    np.testing.assert_array_equal(_run(tmp_path, data, fn2), first)
    assert fn2.calls == 0
    manifest = json.loads((tmp_path / "reference_logps.json").read_text())
    assert set(manifest["key"]) == {"dataset", "model", "tokenizer", "lengths", "tokens"}
    fn3 = CountingLogp()
    np.testing.assert_array_equal(_run(tmp_path, data, fn3, recompute=True), first)
    assert fn3.calls == 2


def test_a_crash_during_the_first_write_leaves_no_cache(tmp_path, monkeypatch):
    data = tokenize_records(RECORDS, tiny_tokenizer())

    def crashing_replace(src, dst):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(refcache.os, "replace", crashing_replace)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, data, CountingLogp())
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    fn = CountingLogp()
    _run(tmp_path, data, fn)
    assert fn.calls == 2


def test_cache_is_invalidated_by_model_lengths_dataset_and_tokenizer(tmp_path):
    tok = tiny_tokenizer()
    data = tokenize_records(RECORDS, tok)
    _run(tmp_path, data, CountingLogp())

    fn = CountingLogp(scale=2.0)  # another model
    np.testing.assert_allclose(_run(tmp_path, data, fn, model="model-b"), _expected(data, 2.0))
    assert fn.calls == 2

    config = TokenizeConfig(max_length=20)  # another max length: other tokens
    short = tokenize_records(RECORDS, tok, config)
    fn = CountingLogp()
    np.testing.assert_allclose(
        _run(tmp_path, short, fn, model="model-b", config=config), _expected(short), rtol=1e-6
    )
    assert fn.calls == 2

    config = TokenizeConfig(max_length=200)  # nothing is cut, but the key still changes
    fn = CountingLogp()
    _run(tmp_path, data, fn, model="model-b", config=config)
    assert fn.calls == 2
    _run(tmp_path, data, fn, model="model-b", config=config)
    assert fn.calls == 2  # reused

    fn = CountingLogp()  # another dataset (the same records in another order)
    _run(tmp_path, tokenize_records(RECORDS[::-1], tok), fn, model="model-b", config=config)
    assert fn.calls == 2

    other = tiny_tokenizer(CHATML.replace(" + '\n' }}", " }}"))  # another chat template
    assert other.chat_template != tok.chat_template
    assert fingerprint_tokenizer(other) != fingerprint_tokenizer(tok)
    fn = CountingLogp()
    _run(tmp_path, data, fn, model="model-b", config=config, tok=other)
    assert fn.calls == 2
    assert len(list(tmp_path.glob("*.npz"))) == 1  # old data files are removed


def test_packed_and_unpaired_and_ranked_tables(tmp_path):
    tok = tiny_tokenizer()
    pairs = tokenize_records(RECORDS, tok)
    packed = _run(tmp_path / "p", pairs, CountingLogp(), max_segments=3)
    np.testing.assert_allclose(packed, _expected(pairs), rtol=1e-6)

    unpaired = tokenize_records(
        [UnpairedRecord((USER,), "Paris.", desirable=d) for d in (True, False, True)], tok
    )
    table = _run(tmp_path / "u", unpaired, CountingLogp())
    assert table.shape == (3,)
    np.testing.assert_allclose(table, _expected(unpaired)[:, 0], rtol=1e-6)

    ranked = tokenize_records(
        [
            RankedRecord((USER,), ("Paris.", "Rome.", "London."), scores=(2.0, 1.0, 0.0)),
            RankedRecord((USER,), ("Paris.", "Berlin."), scores=(1.0, 0.0)),
        ],
        tok,
    )
    table = _run(tmp_path / "r", ranked, CountingLogp())
    assert table.shape == (2, 3) and np.isnan(table[1, 2]) and not np.isnan(table[:, :2]).any()


def test_a_wrong_logp_shape_raises(tmp_path):
    data = tokenize_records(RECORDS, tiny_tokenizer())
    with pytest.raises(ValueError, match="logp_fn returned shape"):
        _run(tmp_path, data, lambda batch: np.zeros(len(batch["example_index"])))
    assert not list(tmp_path.iterdir())


def _snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("crash_at", ["fsync", "data_rename", "manifest_rename"])
def test_interrupted_write_leaves_the_previous_cache_intact(tmp_path, monkeypatch, crash_at):
    data = tokenize_records(RECORDS, tiny_tokenizer())
    old = _run(tmp_path, data, CountingLogp())
    before = _snapshot(tmp_path)
    real_replace, real_fsync = os.replace, os.fsync
    replaces = []

    def crashing_replace(src, dst):
        replaces.append(dst)
        rename = {"data_rename": 1, "manifest_rename": 2}.get(crash_at)
        if len(replaces) == rename:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    def crashing_fsync(fd):
        raise KeyboardInterrupt("killed")  # the temporary file is written, not renamed

    if crash_at == "fsync":
        monkeypatch.setattr(refcache.os, "fsync", crashing_fsync)
    monkeypatch.setattr(refcache.os, "replace", crashing_replace)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, data, CountingLogp(scale=3.0), model="model-new")
    monkeypatch.setattr(refcache.os, "replace", real_replace)
    monkeypatch.setattr(refcache.os, "fsync", real_fsync)

    after = _snapshot(tmp_path)
    assert not [n for n in after if n.endswith(".tmp")]  # no temporary file left behind
    assert after["reference_logps.json"] == before["reference_logps.json"]
    for name, content in before.items():
        assert after[name] == content
    fn = CountingLogp()
    np.testing.assert_array_equal(_run(tmp_path, data, fn), old)  # the old cache still works
    assert fn.calls == 0
    fn = CountingLogp(scale=3.0)
    np.testing.assert_allclose(_run(tmp_path, data, fn, model="model-new"), _expected(data, 3.0))
    assert fn.calls == 2


def test_a_corrupt_or_half_written_data_file_is_recomputed(tmp_path):
    data = tokenize_records(RECORDS, tiny_tokenizer())
    old = _run(tmp_path, data, CountingLogp())
    (npz,) = tmp_path.glob("*.npz")
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])  # e.g. a partial copy
    # A killed writer's leftover temporary file is never read.
    (tmp_path / ".reference_logps.json.123.abc.tmp").write_text("{")
    fn = CountingLogp()
    np.testing.assert_array_equal(_run(tmp_path, data, fn), old)
    assert fn.calls == 2
    (tmp_path / "reference_logps.json").write_text("{not json")
    fn = CountingLogp()
    _run(tmp_path, data, fn)
    assert fn.calls == 2


def test_attach_by_example_index():
    data = tokenize_records(RECORDS, tiny_tokenizer())
    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    for max_segments in (None, 2):
        it = BatchIterator(
            data,
            batch_size=2,
            seed=1,
            num_epochs=1,
            drop_remainder=False,
            max_segments=max_segments,
        )
        for batch in it:
            out = attach_reference_logps(batch, table)
            index, real = batch["example_index"], batch["example_mask"]
            assert out["reference_logps"].shape == (*index.shape, 2)
            np.testing.assert_array_equal(out["reference_logps"][real], table[index[real]])
            assert not out["reference_logps"][~real].any()
    with pytest.raises(ValueError, match="outside a table"):
        attach_reference_logps(batch, table[:1])


def test_fingerprints():
    params = {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    changed = {"w": np.ones((2, 3), np.float32), "b": np.full(3, 1e-7, np.float32)}
    assert fingerprint_params(params) == fingerprint_params(dict(params))
    assert fingerprint_params(params) != fingerprint_params(changed)
    assert fingerprint_records(RECORDS) != fingerprint_records(RECORDS[:2])
    assert fingerprint_tokenizer(tiny_tokenizer()) == fingerprint_tokenizer(tiny_tokenizer())
