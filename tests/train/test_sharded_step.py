"""The same tiny model and batch give the same numbers on 1 device and on 8-device meshes."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxpref import models
from jaxpref.train import sharded
from jaxpref.train.mesh import make_mesh
from jaxpref.train.objectives import Objective
from jaxpref.train.step import init_state, make_loss_fn, make_train_step, split_model

CONFIG = models.TransformerConfig.tiny()
OBJECTIVE = Objective("dpo", {"beta": 0.5})
# Plain SGD: Adam's m/sqrt(v) turns 1e-9 gradient differences of near-zero entries into
# lr-sized parameter differences, which would hide what this test compares.
OPTIMIZER = optax.sgd(0.5)


def make_batch(batch_size=8, time=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, CONFIG.vocab_size, (batch_size, 2, time)).astype(np.int32)
    targets = np.concatenate([ids[..., 1:], np.zeros((batch_size, 2, 1), np.int32)], -1)
    loss_mask = np.broadcast_to(np.arange(time) >= 5, ids.shape).copy()
    loss_mask[..., -1] = False
    loss_mask[0, 1, 5:8] = False  # uneven response lengths
    return {
        "input_ids": ids,
        "targets": targets,
        "loss_mask": loss_mask,
        "attention_mask": np.ones(ids.shape, bool),
        "positions": np.broadcast_to(np.arange(time), ids.shape).astype(np.int32),
        "example_mask": np.ones(batch_size, bool),
    }


def run(mesh_shape=None, preset=None, steps=3):
    model = models.Transformer(CONFIG, rngs=nnx.Rngs(0))
    mesh = None
    if mesh_shape is not None:
        mesh = make_mesh(mesh_shape)
        model = models.shard_model(model, mesh, getattr(models.ShardingRules, preset)())
    model_def, params = split_model(model)
    reference = jax.tree.map(lambda x: x.copy(), params)
    state = init_state(params, OPTIMIZER, reference=reference)
    logps_fn = sharded.sharded_logps_fn(mesh) if mesh is not None else None
    if mesh is not None:
        state = sharded.place_state(state, mesh)
    batch = sharded.place_batch(make_batch(), mesh)
    loss_fn = make_loss_fn(model_def, OBJECTIVE, logps_fn=logps_fn)
    grads = jax.jit(jax.grad(lambda p: loss_fn(p, state.reference, batch)[0]))(state.params)
    step = sharded.jit_step(
        make_train_step(model_def, OBJECTIVE, OPTIMIZER, logps_fn=logps_fn), state, mesh=mesh
    )
    losses = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(grads), jax.device_get(state.params), state, mesh


@pytest.fixture(scope="module")
def single_device():
    return run()


@pytest.mark.parametrize(
    ("mesh_shape", "preset"),
    [((8, 1, 1), "data_parallel"), ((2, 4, 1), "fsdp"), ((2, 2, 2), "fsdp_tensor")],
)
def test_mesh_matches_single_device(single_device, mesh_shape, preset):
    losses0, grads0, params0, _, _ = single_device
    losses, grads, params, state, mesh = run(mesh_shape, preset)
    np.testing.assert_allclose(losses, losses0, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]  # it trained
    for g, g0 in zip(jax.tree.leaves(grads), jax.tree.leaves(grads0), strict=True):
        np.testing.assert_allclose(g, g0, atol=1e-5, rtol=1e-5)
    for p, p0 in zip(jax.tree.leaves(params), jax.tree.leaves(params0), strict=True):
        np.testing.assert_allclose(p, p0, atol=1e-5, rtol=1e-5)
    # The layout is kept: parameters stay on the mesh with their rule-given shardings.
    leaves = jax.tree.leaves(state.params)
    assert all(leaf.sharding.mesh == mesh for leaf in leaves)
    if preset != "data_parallel":
        assert any(not leaf.sharding.is_fully_replicated for leaf in leaves)


def test_accumulation_matches_one_big_batch():
    model = models.Transformer(CONFIG, rngs=nnx.Rngs(0))
    model_def, params = split_model(model)
    state = init_state(params, OPTIMIZER, reference=jax.tree.map(lambda x: x.copy(), params))
    batch = sharded.place_batch(make_batch(), None)
    one = jax.jit(make_train_step(model_def, OBJECTIVE, OPTIMIZER))
    acc = jax.jit(make_train_step(model_def, OBJECTIVE, OPTIMIZER, accumulation_steps=4))
    s1, m1 = one(state, batch)
    s4, m4 = acc(state, batch)
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s4.params), jax.tree.leaves(s1.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="not divisible by accumulation_steps=3"):
        jax.jit(make_train_step(model_def, OBJECTIVE, OPTIMIZER, accumulation_steps=3))(
            state, batch
        )
