"""Batches: layout and shift convention, buckets, packing, resumable and host-sharded order."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxpref.data.batching import bucket_length, collate, length_buckets
from jaxpref.data.iterator import BatchIterator
from jaxpref.data.records import Message, PairwiseRecord
from jaxpref.data.tokenize import TokenizedExample, tokenize_records
from jaxpref.logprobs import sequence_logps
from tests.data._tiny_tokenizer import tiny_tokenizer


def _example(rng, kind, prompt_len, response_lens, **features) -> TokenizedExample:
    prompt = rng.integers(3, 50, prompt_len, dtype=np.int32)
    ids = tuple(
        np.concatenate([prompt, rng.integers(3, 50, n, dtype=np.int32)]) for n in response_lens
    )
    masks = tuple(np.arange(len(i)) >= prompt_len for i in ids)
    return TokenizedExample(kind, ids, masks, prompt_len, features, source=f"s:{len(ids[0])}")


def _pairs(n, seed=0, max_len=60):
    rng = np.random.default_rng(seed)
    return [
        _example(
            rng,
            "pairwise",
            int(rng.integers(1, max_len // 2)),
            rng.integers(1, max_len // 2, 2),
            strength=float(rng.random()) if i % 3 else None,
            scores=(float(i), -float(i)),
        )
        for i in range(n)
    ]


def _sequence(batch, row, item, segment=None):
    """(input_ids, targets, loss_mask, positions) of one sequence of a batch."""
    keys = ("input_ids", "targets", "loss_mask", "positions")
    arrays = [batch[k][row, item] for k in keys]
    if segment is None:
        keep = batch["attention_mask"][row, item]
    else:
        keep = batch["segment_ids"][row, item] == segment + 1
    return tuple(a[keep] for a in arrays)


# --------------------------------------------------------------------------- layout


def test_pair_batch_layout_and_shift_convention():
    tok = tiny_tokenizer()
    user = Message("user", "What is the capital of France?")
    records = [
        PairwiseRecord((user,), "Paris.", "London.", strength=0.9),
        PairwiseRecord((user,), "The capital of France is Paris.", "Rome.", margin=2.0),
        PairwiseRecord((user,), "Paris", "Berlin", chosen_score=1.0),
    ]
    data = tokenize_records(records, tok)
    it = BatchIterator(data, batch_size=4, shuffle=False, drop_remainder=False, buckets=(64,))
    batch = next(it)
    b, t = 4, 64
    expected = {
        "input_ids": ((b, 2, t), np.int32),
        "targets": ((b, 2, t), np.int32),
        "loss_mask": ((b, 2, t), np.bool_),
        "attention_mask": ((b, 2, t), np.bool_),
        "positions": ((b, 2, t), np.int32),
        "example_index": ((b,), np.int32),
        "example_mask": ((b,), np.bool_),
        "strength": ((b,), np.float32),
        "margin": ((b,), np.float32),
        "scores": ((b, 2), np.float32),
    }
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    np.testing.assert_array_equal(batch["example_index"], [0, 1, 2, -1])
    np.testing.assert_array_equal(batch["example_mask"], [True, True, True, False])
    np.testing.assert_array_equal(batch["strength"][:3], np.float32([0.9, np.nan, np.nan]))
    np.testing.assert_array_equal(batch["margin"][:3], [np.nan, 2.0, np.nan])
    np.testing.assert_array_equal(batch["scores"][2], [1.0, np.nan])
    for row, record in enumerate(records):
        ex = data[row]
        for item, answer in enumerate((record.chosen, record.rejected)):
            ids, mask, n = ex.input_ids[item], ex.response_mask[item], len(ex.input_ids[item])
            np.testing.assert_array_equal(batch["input_ids"][row, item, :n], ids)
            assert np.all(batch["input_ids"][row, item, n:] == 0)
            # targets[t] = input_ids[t + 1]; loss_mask marks trained targets.
            np.testing.assert_array_equal(batch["targets"][row, item, : n - 1], ids[1:])
            np.testing.assert_array_equal(batch["loss_mask"][row, item, : n - 1], mask[1:])
            assert not batch["loss_mask"][row, item, n - 1 :].any()
            np.testing.assert_array_equal(batch["positions"][row, item, :n], np.arange(n))
            assert batch["attention_mask"][row, item].sum() == n
            trained = batch["targets"][row, item][batch["loss_mask"][row, item]]
            assert tok.decode(trained) == answer + "<|im_end|>"
    # jaxpref.logprobs reads the batch directly: uniform logits give -log V per trained token.
    vocab = len(tok)
    logps = sequence_logps(jnp.zeros((b, 2, t, vocab)), batch["targets"], where=batch["loss_mask"])
    counts = np.array([[m.sum() for m in ex.response_mask] for ex in data] + [[0, 0]])
    np.testing.assert_allclose(logps, -np.log(vocab) * counts, rtol=1e-5)


def test_ranked_batch_has_a_list_axis_and_item_mask():
    rng = np.random.default_rng(0)
    examples = [
        _example(rng, "ranked", 3, (2, 4, 3), scores=(1.0, 2.0, 0.5), ranks=None),
        _example(rng, "ranked", 2, (5, 1), scores=None, ranks=(1, 0)),
    ]
    batch = next(BatchIterator(examples, batch_size=2, shuffle=False, buckets=(16,)))
    assert batch["input_ids"].shape == (2, 3, 16)
    np.testing.assert_array_equal(batch["item_mask"], [[True, True, True], [True, True, False]])
    np.testing.assert_array_equal(batch["scores"], [[1.0, 2.0, 0.5], [np.nan] * 3])
    np.testing.assert_array_equal(batch["ranks"], [[-1, -1, -1], [1, 0, -1]])
    assert not batch["attention_mask"][1, 2].any()
    with pytest.raises(ValueError, match="list_size"):
        BatchIterator(examples, batch_size=2, list_size=2)


def test_unpaired_batch_has_no_item_axis():
    rng = np.random.default_rng(0)
    examples = [_example(rng, "unpaired", 2, (3,), desirable=d) for d in (True, False, True)]
    batch = next(BatchIterator(examples, batch_size=3, shuffle=False, buckets=(8,)))
    assert batch["input_ids"].shape == batch["loss_mask"].shape == (3, 8)
    np.testing.assert_array_equal(batch["desirable"], [True, False, True])
    assert "item_mask" not in batch and "segment_ids" not in batch


def test_length_buckets():
    assert length_buckets(1024, min_length=128) == (128, 256, 512, 1024)
    assert length_buckets(300) == (64, 128, 256, 300)
    assert bucket_length(65, (64, 128)) == 128
    with pytest.raises(ValueError, match="largest bucket"):
        bucket_length(129, (64, 128))


def test_buckets_bound_the_compiled_shapes():
    examples = [e for size in (8, 16, 40, 120) for e in _pairs(12, seed=size, max_len=size)]
    buckets = (16, 32, 64, 128)
    it = BatchIterator(examples, batch_size=4, buckets=buckets, num_epochs=3, seed=3)
    shapes = set()
    for batch in it:
        shapes.add(batch["input_ids"].shape)
        longest = int(batch["attention_mask"].sum(-1).max())
        assert batch["input_ids"].shape[-1] == bucket_length(longest, buckets)
    assert shapes <= set(it.batch_shapes()) and len(shapes) <= len(buckets)
    assert len(shapes) > 1


# --------------------------------------------------------------------------- packing


def _unpacked_sequences(examples):
    it = BatchIterator(examples, batch_size=1, shuffle=False, num_epochs=1, buckets=(128,))
    return {int(b["example_index"][0]): [_sequence(b, 0, i) for i in range(2)] for b in it}


def test_packing_gives_the_same_per_sequence_content():
    examples = _pairs(40, seed=1)
    reference = _unpacked_sequences(examples)
    it = BatchIterator(
        examples,
        batch_size=4,
        max_segments=4,
        buckets=(128,),
        num_epochs=1,
        drop_remainder=False,
        seed=5,
    )
    seen = []
    rows = 0
    for batch in it:
        assert batch["segment_ids"].shape == batch["input_ids"].shape == (4, 2, 128)
        assert batch["example_index"].shape == batch["strength"].shape == (4, 4)
        assert batch["scores"].shape == (4, 4, 2)
        rows += int(batch["example_mask"].any(-1).sum())
        for row in range(4):
            for seg in np.flatnonzero(batch["example_mask"][row]):
                index = int(batch["example_index"][row, seg])
                seen.append(index)
                for item in range(2):
                    packed = _sequence(batch, row, item, seg)
                    for got, want in zip(packed, reference[index][item], strict=True):
                        np.testing.assert_array_equal(got, want)
                    np.testing.assert_array_equal(packed[3], np.arange(len(packed[0])))
                np.testing.assert_array_equal(
                    batch["scores"][row, seg], examples[index].features["scores"]
                )
            # Padding (segment 0) holds no trained token and no attention.
            pad = batch["segment_ids"][row] == 0
            assert not (batch["attention_mask"][row] & pad).any()
            assert not (batch["loss_mask"][row] & pad).any()
    assert sorted(seen) == list(range(40))
    assert rows < 40  # several examples share a row


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=12),
    segments=st.integers(1, 4),
)
def test_packing_property(lengths, segments):
    rng = np.random.default_rng(0)
    examples = [_example(rng, "pairwise", 1, resp) for resp in lengths]
    it = BatchIterator(
        examples,
        batch_size=2,
        max_segments=segments,
        buckets=(21, 42),
        num_epochs=1,
        drop_remainder=False,
        shuffle=False,
    )
    seen = []
    for batch in it:
        for row, seg in zip(*np.nonzero(batch["example_mask"]), strict=True):
            index = int(batch["example_index"][row, seg])
            seen.append(index)
            for item in range(2):
                ids = _sequence(batch, row, item, seg)[0]
                np.testing.assert_array_equal(ids, examples[index].input_ids[item])
    assert seen == list(range(len(examples)))


# --------------------------------------------------------------------------- order and state


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("max_segments", [None, 3])
@pytest.mark.parametrize("drop_remainder", [True, False])
def test_resume_from_state_gives_the_same_batches(max_segments, drop_remainder):
    examples = _pairs(23, seed=2)
    kwargs = dict(
        batch_size=4,
        seed=7,
        buckets=(32, 64),
        max_segments=max_segments,
        drop_remainder=drop_remainder,
    )
    it = BatchIterator(examples, **kwargs)
    states, batches = [], []
    for _ in range(14):  # several epochs
        states.append(it.get_state())
        batches.append(next(it))
    epochs = [s["epoch"] for s in states]
    assert epochs[-1] >= 1
    boundary = epochs.index(1)  # the first batch of epoch 1
    for step in (0, 3, boundary - 1, boundary, len(states) - 4):
        state = json.loads(json.dumps(states[step]))  # as a checkpoint stores it
        state = {k: np.int64(v) for k, v in state.items()}
        fresh = BatchIterator(examples, **kwargs)
        fresh.set_state(state)
        for want in batches[step:]:
            _assert_same(next(fresh), want)


def test_seed_fixes_the_order_and_epochs_reshuffle():
    examples = _pairs(12)

    def order(seed, epochs=2):
        it = BatchIterator(examples, batch_size=4, seed=seed, num_epochs=epochs)
        return [b["example_index"].tolist() for b in it]

    assert order(0) == order(0)
    assert order(0) != order(1)
    first, second = order(0)[:3], order(0)[3:]
    flat = [sorted(i for batch in part for i in batch) for part in (first, second)]
    assert flat[0] == flat[1] == list(range(12))
    assert first != second


def test_last_partial_batch_is_padded_or_dropped():
    examples = _pairs(10)
    kept = list(BatchIterator(examples, batch_size=4, num_epochs=1, drop_remainder=False))
    dropped = list(BatchIterator(examples, batch_size=4, num_epochs=1))
    assert len(kept) == 3 and len(dropped) == 2
    np.testing.assert_array_equal(kept[-1]["example_mask"], [True, True, False, False])
    assert sorted(i for b in kept for i in b["example_index"] if i >= 0) == list(range(10))


@pytest.mark.parametrize("max_segments", [None, 2])
def test_hosts_together_see_exactly_the_global_batch(max_segments):
    examples = _pairs(19, seed=4)
    kwargs = dict(batch_size=4, seed=11, buckets=(32, 64), max_segments=max_segments)
    world = BatchIterator(examples, **kwargs)
    hosts = [BatchIterator(examples, process_index=p, process_count=2, **kwargs) for p in range(2)]
    for _ in range(8):  # crosses an epoch boundary
        want = next(world)
        parts = [next(h) for h in hosts]
        assert parts[0]["input_ids"].shape[0] == 2
        for key in want:
            np.testing.assert_array_equal(
                np.concatenate([p[key] for p in parts]), want[key], err_msg=key
            )
        ids = [set(p["example_index"][p["example_mask"]].tolist()) for p in parts]
        assert not ids[0] & ids[1]
        assert hosts[0].get_state() == hosts[1].get_state() == world.get_state()


def test_invalid_arguments_raise():
    examples = _pairs(3)
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        next(BatchIterator(examples, batch_size=4))
    with pytest.raises(ValueError, match="multiple of process_count"):
        BatchIterator(examples, batch_size=3, process_count=2)
    with pytest.raises(ValueError, match="largest bucket"):
        BatchIterator(examples, batch_size=1, buckets=(4,))
    with pytest.raises(ValueError, match="invalid iterator state"):
        BatchIterator(examples, batch_size=1).set_state({"epoch": 0, "index": 9})
    with pytest.raises(ValueError, match="at most 1"):
        collate([[(0, examples[0]), (1, examples[1])]], kind="pairwise", length=64, num_items=2)
