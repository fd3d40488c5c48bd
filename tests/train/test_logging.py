"""MetricLogger (metrics.jsonl, TensorBoard, resume de-duplication), summary.json, ProgressBar."""

from __future__ import annotations

import io
import json
import pathlib
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from jaxpref.train import MetricLogger, ProgressBar, read_metrics, write_summary


def read_event_file(path: pathlib.Path) -> list[event_pb2.Event]:
    """The events of one TFRecord event file (8-byte length, its CRC, payload, its CRC)."""
    data = path.read_bytes()
    events, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
        offset += 12 + length + 4
    return events


def event_files(logdir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(logdir.glob("events.out.tfevents.*"))


def scalars(events):
    return [(v.tag, e.step, v.simple_value) for e in events for v in e.summary.value]


def metrics_at(step):
    return {"loss": jnp.float32(1.0 / step), "accuracy": jnp.float32(0.5), "count": jnp.int32(step)}


def test_log_is_one_step_late_and_writes_jsonl(tmp_path):
    with MetricLogger(tmp_path, tensorboard=False) as logger:
        assert logger.log(1, metrics_at(1)) is None
        step, values = logger.log(2, metrics_at(2))
        assert step == 1
        assert values == {"loss": 1.0, "accuracy": 0.5, "count": 1.0}
        assert [r["step"] for r in read_metrics(tmp_path)] == [1]
        assert logger.flush() == (2, {"loss": 0.5, "accuracy": 0.5, "count": 2.0})
        assert logger.flush() is None
        logger.log(3, metrics_at(3))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": s, "loss": float(np.float32(1.0 / s)), "accuracy": 0.5, "count": float(s)}
        for s in (1, 2, 3)
    ]
    assert not (tmp_path / "tensorboard").exists()


def test_accepts_jitted_outputs_and_host_scalars(tmp_path):
    @jax.jit
    def step_metrics(x):
        return {"loss": jnp.mean(x**2), "grad_norm": jnp.linalg.norm(x)}

    with MetricLogger(tmp_path, tensorboard=False) as logger:
        logger.log(1, step_metrics(jnp.arange(4.0)))
        logger.log(2, {"loss": 0.25, "lr": np.float64(1e-3)})
    records = read_metrics(tmp_path)
    assert records[0] == {"step": 1, "loss": 3.5, "grad_norm": pytest.approx(np.sqrt(14.0))}
    assert records[1] == {"step": 2, "loss": 0.25, "lr": 1e-3}


def test_non_finite_values_round_trip(tmp_path):
    with MetricLogger(tmp_path, tensorboard=False) as logger:
        logger.write_scalars(1, {"loss": float("nan"), "grad_norm": float("inf")})
    (record,) = read_metrics(tmp_path)
    assert np.isnan(record["loss"]) and record["grad_norm"] == np.inf


def test_rejects_non_scalar_metrics(tmp_path):
    with MetricLogger(tmp_path, tensorboard=False) as logger:
        logger.log(1, {"rewards": jnp.ones(3)})
        with pytest.raises(ValueError, match="'rewards' must be a scalar"):
            logger.flush()


def test_tensorboard_event_files(tmp_path):
    with MetricLogger(tmp_path) as logger:
        for step in (1, 2, 3):
            logger.log(step, metrics_at(step))
    files = event_files(tmp_path / "tensorboard")
    assert len(files) == 1 and files[0].stat().st_size > 0
    got = scalars(read_event_file(files[0]))
    expected = [
        (tag, s, float(np.float32(v)))
        for s in (1, 2, 3)
        for tag, v in (("loss", 1.0 / s), ("accuracy", 0.5), ("count", s))
    ]
    assert sorted(got) == sorted(expected)


def test_resume_drops_steps_after_the_checkpoint(tmp_path):
    with MetricLogger(tmp_path) as logger:
        for step in range(1, 7):
            logger.log(step, metrics_at(step))
    # The run died while writing step 7's line.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')

    with MetricLogger(tmp_path, resume_step=4) as logger:
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
        for step in range(5, 9):
            logger.log(step, metrics_at(step))
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())

    # TensorBoard: the resumed writer's file starts with a purge marker at step 5, which makes
    # TensorBoard hide the first run's events from step 5 on.
    files = event_files(tmp_path / "tensorboard")
    assert len(files) == 2
    first, resumed = sorted((read_event_file(f) for f in files), key=lambda e: e[0].wall_time)
    assert sorted({s for _, s, _ in scalars(first)}) == [1, 2, 3, 4, 5, 6]  # not overwritten
    starts = [e.step for e in resumed if e.HasField("session_log")]
    assert starts == [5]
    assert sorted({s for _, s, _ in scalars(resumed)}) == [5, 6, 7, 8]


def test_fresh_start_drops_old_lines(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n')
    with MetricLogger(tmp_path, tensorboard=False) as logger:
        assert read_metrics(tmp_path) == []
        logger.log(1, {"loss": 3.0})
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 3.0}]


def test_non_primary_process_writes_nothing(tmp_path):
    with MetricLogger(tmp_path / "run", is_primary=False) as logger:
        logger.log(1, metrics_at(1))
        assert logger.log(2, metrics_at(2)) == (1, {"loss": 1.0, "accuracy": 0.5, "count": 1.0})
    assert not (tmp_path / "run").exists()


def test_write_summary(tmp_path):
    path = write_summary(
        tmp_path, {"final_loss": np.float32(0.5), "params_sha256": "ab", "hist": jnp.arange(3)}
    )
    assert path == tmp_path / "summary.json"
    assert json.loads(path.read_text()) == {
        "final_loss": 0.5,
        "hist": [0, 1, 2],
        "params_sha256": "ab",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        write_summary(tmp_path, {"x": object()})


def test_progress_bar():
    out = io.StringIO()
    with ProgressBar(10, initial=2, disable=False, file=out) as bar:
        bar.update(3, {"loss": 0.51234, "accuracy": 0.75, "grad_norm": 3.0}, num_examples=64)
    text = out.getvalue()  # tqdm throttles redraws; closing draws the final state
    assert "3/10" in text
    assert "loss=0.5123" in text and "accuracy=0.75" in text and "ex/s=" in text
    assert "grad_norm" not in text

    out = io.StringIO()
    with ProgressBar(10, keys=("grad_norm",), unit="tok", disable=False, file=out) as bar:
        bar.update(4, {"loss": 0.5, "grad_norm": 3.0}, num_examples=1000)
    assert "4/10" in out.getvalue() and "grad_norm=3" in out.getvalue()
    assert "tok/s=" in out.getvalue() and "loss" not in out.getvalue()


def test_progress_bar_disabled_writes_nothing():
    out = io.StringIO()
    with ProgressBar(10, disable=True, file=out) as bar:
        bar.update(1, {"loss": 1.0}, num_examples=8)
    assert out.getvalue() == ""
