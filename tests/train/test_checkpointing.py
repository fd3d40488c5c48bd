"""Checkpointer: round trips, sharded restore, retention, resume, atomicity and config checks.

The toy run is a two-layer MLP trained with Adam on batches from a resumable iterator, with a
typed PRNG key in the state (used for input noise) so that resuming must restore every part.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxpref.train import (
    Checkpointer,
    ConfigMismatchError,
    make_mesh,
    params_sha256,
)

OPTIMIZER = optax.adam(1e-2)
HIDDEN = 16
CONFIG = {"model": {"hidden": HIDDEN, "layers": 2}, "lr": 1e-2, "num_steps": 6}


def init_state(key, hidden=HIDDEN):
    k1, k2, k3 = jax.random.split(key, 3)
    params = {
        "dense1": {"w": jax.random.normal(k1, (8, hidden)) * 0.3, "b": jnp.zeros(hidden)},
        "dense2": {"w": jax.random.normal(k2, (hidden, 1)) * 0.3, "b": jnp.zeros(1)},
    }
    return {
        "params": params,
        "opt_state": OPTIMIZER.init(params),
        "step": jnp.int32(0),
        "rng": k3,
    }


def loss_fn(params, x, y):
    h = jnp.tanh(x @ params["dense1"]["w"] + params["dense1"]["b"])
    return jnp.mean((h @ params["dense2"]["w"] + params["dense2"]["b"] - y) ** 2)


@jax.jit
def train_step(state, batch):
    rng, noise_key = jax.random.split(state["rng"])
    x = batch["x"] + 0.01 * jax.random.normal(noise_key, batch["x"].shape)
    grads = jax.grad(loss_fn)(state["params"], x, batch["y"])
    updates, opt_state = OPTIMIZER.update(grads, state["opt_state"], state["params"])
    return {
        "params": optax.apply_updates(state["params"], updates),
        "opt_state": opt_state,
        "step": state["step"] + 1,
        "rng": rng,
    }


class ToyIterator:
    """Deterministic batches from (seed, position); its state is plain ints and arrays."""

    def __init__(self, seed=0, position=0):
        self.seed, self.position = seed, position
        self.order = np.random.default_rng(seed).permutation(16)

    def __next__(self):
        rng = np.random.default_rng([self.seed, int(self.order[self.position % 16])])
        self.position += 1
        x = rng.standard_normal((4, 8)).astype(np.float32)
        return {"x": x, "y": x.sum(axis=1, keepdims=True)}

    def get_state(self):
        return {"seed": self.seed, "position": self.position, "order": self.order}

    @classmethod
    def from_state(cls, state):
        it = cls(state["seed"], state["position"])
        np.testing.assert_array_equal(it.order, state["order"])
        return it


def run(state, it, steps, ckpt=None):
    for _ in range(steps):
        state = train_step(state, next(it))
        if ckpt is not None:
            ckpt.save(int(state["step"]), state, data_state=it.get_state())
    return state


def like(state):
    """The abstract restore target of a concrete state: same shapes, dtypes and shardings."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


DATA_STATE = {
    "position": 24,
    "epoch": 1,
    "order": np.random.default_rng(0).permutation(10),
    "rng_state": np.array([2**64 - 1, 12345], dtype=np.uint64),
    "weight": np.float32(0.25),
    "bounds": (0, 3.5),
    "name": "shard-0",
    "done": None,
}


def test_round_trip(tmp_path):
    state = run(init_state(jax.random.key(0)), ToyIterator(), 3)
    with Checkpointer(tmp_path, save_every=3, config=CONFIG) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(3, state, data_state=DATA_STATE)
        fresh = init_state(jax.random.key(1))
        for target in (fresh, like(fresh)):
            restored = ckpt.restore(target)
            assert restored.step == 3
            assert_trees_equal(restored.state, state)
            assert isinstance(restored.state["opt_state"][0], optax.ScaleByAdamState)
            assert restored.state["rng"].dtype == jax.random.key(0).dtype
            assert restored.config == CONFIG
            assert restored.config_diff == {}
    data = restored.data_state
    assert data.keys() == DATA_STATE.keys()
    for key, want in DATA_STATE.items():
        assert type(data[key]) is type(want)
        if isinstance(want, np.ndarray | np.generic):
            assert data[key].dtype == want.dtype
            np.testing.assert_array_equal(data[key], want)
        else:
            assert data[key] == want


def test_files_on_disk_hold_plain_key_data(tmp_path):
    state = init_state(jax.random.key(0))
    with Checkpointer(tmp_path, config=CONFIG) as ckpt:
        ckpt.save(0, state, force=True)
    step_dir = tmp_path / "0"
    assert sorted(p.name for p in step_dir.iterdir() if p.is_dir()) == ["config", "meta", "state"]
    with Checkpointer(tmp_path) as reader:
        assert reader.stored_config() == CONFIG


def test_restore_needs_shardings_for_abstract_leaves(tmp_path):
    state = init_state(jax.random.key(0))
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, force=True)
        abstract = jax.eval_shape(init_state, jax.random.key(0))  # no shardings
        with pytest.raises(ValueError, match=r"no sharding \(\['opt_state'\]"):
            ckpt.restore(abstract)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        restored = ckpt.restore(abstract, fallback_sharding=device)
        assert_trees_equal(restored.state, state)


def _shardings(mesh, state):
    """FSDP-style: weights split over fsdp (rows) and tensor (columns); the rest replicated."""

    def spec(path, leaf):
        names = jax.tree_util.keystr(path)
        if leaf.ndim == 2 and "['w']" in names:
            tensor = "tensor" if leaf.shape[1] % mesh.shape["tensor"] == 0 else None
            return NamedSharding(mesh, PartitionSpec("fsdp", tensor))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(spec, state)


def test_sharded_restore_on_the_mesh(tmp_path):
    mesh = make_mesh((2, 4, 1))
    shardings = _shardings(mesh, jax.eval_shape(init_state, jax.random.key(0)))
    init = jax.jit(init_state, out_shardings=shardings)
    state = run(init(jax.random.key(0)), ToyIterator(), 2)
    w = state["params"]["dense1"]["w"]
    assert w.sharding.is_equivalent_to(shardings["params"]["dense1"]["w"], w.ndim)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(2, state, force=True)
        target = jax.eval_shape(init, jax.random.key(0))
        restored = ckpt.restore(target).state
        assert_trees_equal(restored, state)
        for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
            assert got.sharding == want.sharding
        assert len(restored["params"]["dense1"]["w"].addressable_shards) == 8

        # Onto another mesh layout: arrays are read straight into the new shardings.
        other = make_mesh((2, 2, 2))
        target = jax.eval_shape(
            jax.jit(init_state, out_shardings=_shardings(other, target)), jax.random.key(0)
        )
        resharded = ckpt.restore(target).state
        assert_trees_equal(resharded, state)
        w = resharded["params"]["dense1"]["w"]
        assert w.sharding.mesh.shape == other.shape
        assert w.addressable_shards[0].data.shape == (4, 8)


def test_keeps_the_last_k(tmp_path):
    state = init_state(jax.random.key(0))
    with Checkpointer(tmp_path, save_every=1, max_to_keep=2) as ckpt:
        for step in range(1, 6):
            assert ckpt.save(step, state)
        ckpt.wait()
        assert ckpt.all_steps() == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["4", "5"]


def test_save_every_and_force(tmp_path):
    state = init_state(jax.random.key(0))
    with Checkpointer(tmp_path, save_every=3, max_to_keep=None) as ckpt:
        saved = [step for step in range(1, 8) if ckpt.save(step, state)]
        assert saved == [3, 6]
        assert not ckpt.should_save(7)
        assert ckpt.save(7, state, force=True)  # the final step
        assert not ckpt.save(7, state, force=True)  # already saved: a no-op, not an error
        ckpt.wait()
        assert ckpt.all_steps() == [3, 6, 7]
    with Checkpointer(tmp_path) as only_forced:
        assert not only_forced.should_save(9)
        assert not only_forced.save(9, state)


def test_resume_is_bit_identical(tmp_path):
    straight = run(init_state(jax.random.key(0)), ToyIterator(), 6)

    # A run that checkpoints every 2 steps and dies after step 5.
    ckpt = Checkpointer(tmp_path, save_every=2, config=CONFIG)
    run(init_state(jax.random.key(0)), ToyIterator(), 5, ckpt)
    ckpt.close()

    # The restarted run: same workdir, resumes from the latest complete step.
    with Checkpointer(tmp_path, save_every=2, config=CONFIG) as ckpt:
        assert ckpt.latest_step() == 4
        restored = ckpt.restore(init_state(jax.random.key(99)))
        assert restored.step == 4 and int(restored.state["step"]) == 4
        it = ToyIterator.from_state(restored.data_state)
        resumed = run(restored.state, it, 2, ckpt)
    assert params_sha256(resumed["params"]) == params_sha256(straight["params"])
    assert params_sha256(resumed) == params_sha256(straight)


def test_partial_write_is_ignored_and_cleaned_up(tmp_path):
    state = init_state(jax.random.key(0))
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        ckpt.save(2, state)
    # What a write killed half-way leaves behind (Orbax's temporary directory).
    partial = tmp_path / "4.orbax-checkpoint-tmp"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "manifest.ocdbt").write_bytes(b"\0" * 100)
    with Checkpointer(tmp_path, save_every=2) as ckpt:
        assert ckpt.latest_step() == 2
        assert_trees_equal(ckpt.restore(state).state, state)
        assert ckpt.save(4, state)
        ckpt.wait()
        assert ckpt.all_steps() == [2, 4]
    assert not partial.exists()


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    import jax, numpy as np
    from jaxpref.train import Checkpointer

    directory = sys.argv[1]
    ckpt = Checkpointer(directory, save_every=1)
    big = np.random.default_rng(0).standard_normal(4_000_000).astype(np.float32)
    ckpt.save(1, {"w": jax.numpy.asarray(big), "rng": jax.random.key(1)})
    ckpt.wait()
    ckpt.save(2, {"w": jax.numpy.asarray(big + 1), "rng": jax.random.key(2)})  # async
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = os.listdir(directory)
        if "2" in names:
            sys.exit(3)  # finished before it could be interrupted
        if any(n.startswith("2.orbax-checkpoint-tmp") for n in names):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.001)
    sys.exit(4)
    """
)


def test_killed_write_leaves_the_previous_checkpoint(tmp_path):
    directory = tmp_path / "ckpt"
    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    proc = subprocess.run(
        [sys.executable, str(script), str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    names = sorted(p.name for p in directory.iterdir())
    assert "1" in names and "2" not in names
    assert any(n.startswith("2.orbax-checkpoint-tmp") for n in names), names

    target = {"w": jnp.zeros(4_000_000), "rng": jax.random.key(0)}
    with Checkpointer(directory, save_every=1) as ckpt:
        assert ckpt.latest_step() == 1
        restored = ckpt.restore(target)
        big = np.random.default_rng(0).standard_normal(4_000_000).astype(np.float32)
        np.testing.assert_array_equal(np.asarray(restored.state["w"]), big)
        assert_trees_equal(restored.state["rng"], jax.random.key(1))
        assert ckpt.save(2, target)
        ckpt.wait()
        assert ckpt.all_steps() == [1, 2]
    assert not any(".orbax-checkpoint-tmp" in p.name for p in directory.iterdir())


def test_no_checkpoint(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() is None and ckpt.all_steps() == []
        with pytest.raises(FileNotFoundError, match="No complete checkpoint"):
            ckpt.restore(init_state(jax.random.key(0)))
        ckpt.save(1, init_state(jax.random.key(0)), force=True)
        with pytest.raises(FileNotFoundError, match=r"step 2 .*steps: \[1\]"):
            ckpt.restore(init_state(jax.random.key(0)), step=2)


def test_config_change_that_changes_shapes_is_named(tmp_path):
    with Checkpointer(tmp_path, config=CONFIG) as ckpt:
        ckpt.save(1, init_state(jax.random.key(0)), force=True)
    wider = {**CONFIG, "model": {"hidden": 32, "layers": 2}, "lr": 3e-4}
    with Checkpointer(tmp_path, config=wider) as ckpt:
        with pytest.raises(ConfigMismatchError) as info:
            ckpt.restore(init_state(jax.random.key(0), hidden=32))
    message = str(info.value)
    assert "model.hidden (checkpoint: 16, now: 32)" in message
    assert "lr (checkpoint: 0.01, now: 0.0003)" in message
    assert "9 arrays differ in shape" in message  # 3 of the 4 params, and their mu and nu
    assert "['opt_state'][0].mu['dense1']['b']: checkpoint (16,), target (32,)" in message
    assert info.value.fields == {"lr": (1e-2, 3e-4), "model.hidden": (16, 32)}


def test_config_change_that_keeps_shapes_is_reported(tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Config:
        hidden: int = HIDDEN
        betas: tuple[float, float] = (0.9, 0.999)
        num_steps: int = 6
        workdir: pathlib.Path = pathlib.Path("/tmp/run")

    state = init_state(jax.random.key(0))
    with Checkpointer(tmp_path, config=Config()) as ckpt:
        ckpt.save(1, state, force=True)
        assert ckpt.stored_config() == {
            "hidden": HIDDEN,
            "betas": [0.9, 0.999],
            "num_steps": 6,
            "workdir": "/tmp/run",
        }
    with Checkpointer(tmp_path, config=Config(num_steps=12)) as ckpt:
        restored = ckpt.restore(state)
    assert restored.config_diff == {"num_steps": (6, 12)}
    assert_trees_equal(restored.state, state)


def test_shape_change_without_config_diff(tmp_path):
    with Checkpointer(tmp_path, config=CONFIG) as ckpt:
        ckpt.save(1, init_state(jax.random.key(0)), force=True)
        with pytest.raises(
            ValueError,
            match=r"does not fit.*mu\['dense1'\]\['w'\]: checkpoint \(8, 16\), target \(8, 32\)",
        ) as info:
            ckpt.restore(init_state(jax.random.key(0), hidden=32))
        assert not isinstance(info.value, ConfigMismatchError)


def test_key_layout_mismatch(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, {"w": jnp.ones(2), "rng": jax.random.key(0)}, force=True)
        with pytest.raises(ValueError, match="typed PRNG keys"):
            ckpt.restore({"w": jnp.ones(2), "rng": jax.random.key_data(jax.random.key(0))})
        rbg = jax.random.key(0, impl="rbg")
        with pytest.raises(ValueError, match="saved as key<fry>"):
            ckpt.restore({"w": jnp.ones(2), "rng": rbg})


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="save_every"):
        Checkpointer(tmp_path, save_every=0)
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path, max_to_keep=0)
    with pytest.raises(TypeError, match="config must be"):
        Checkpointer(tmp_path, config=[1, 2])
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        Checkpointer(tmp_path, config={"f": object()})


def test_flax_containers(tmp_path):
    """A flax.struct train state holding nnx.State (with an nnx.Rngs key) round-trips."""
    from flax import nnx, struct

    @struct.dataclass
    class TrainState:
        model: nnx.State
        rngs: nnx.State
        opt_state: optax.OptState
        step: jax.Array

    def make(seed):
        model = nnx.Linear(3, 4, rngs=nnx.Rngs(seed))
        rngs = nnx.Rngs(seed)
        rngs()  # advance the stream: count 1
        params = nnx.state(model)
        return TrainState(params, nnx.state(rngs), OPTIMIZER.init(params), jnp.int32(seed))

    state = make(0)
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, state, force=True)
        restored = ckpt.restore(make(1)).state
    assert type(restored) is TrainState and isinstance(restored.model, nnx.State)
    assert params_sha256(restored) == params_sha256(state)
