"""Sweep mode: each member of a vmapped sweep equals a separate run with its options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxpref import models
from jaxpref.train import onpolicy, sweep
from jaxpref.train.objectives import Objective
from jaxpref.train.step import init_state, make_train_step, split_model
from tests.train import test_onpolicy as onpolicy_test
from tests.train.test_sharded_step import make_batch

CONFIG = models.TransformerConfig.tiny()
# Plain SGD, as in test_sharded_step: Adam would amplify float noise of near-zero gradients.
OPTIMIZER = optax.sgd(0.1)
STEPS = 3


@pytest.fixture(scope="module")
def setup():
    model = models.Transformer(CONFIG, rngs=nnx.Rngs(0))
    model_def, params = split_model(model)
    reference = jax.tree.map(jnp.copy, params)
    batch = {k: jnp.asarray(v) for k, v in make_batch().items()}
    return model_def, params, reference, batch


_SEPARATE_RUNS: dict = {}


def separate_run(setup, objective):
    key = (objective.name, tuple(sorted(objective.options.items())))
    if key not in _SEPARATE_RUNS:  # members shared by several tests run once
        _SEPARATE_RUNS[key] = _separate_run(setup, objective)
    return _SEPARATE_RUNS[key]


def _separate_run(setup, objective):
    model_def, params, reference, batch = setup
    state = init_state(params, OPTIMIZER, reference=reference)
    step = jax.jit(make_train_step(model_def, objective, OPTIMIZER))
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return state, losses


def sweep_run(setup, objectives, **kwargs):
    model_def, params, reference, batch = setup
    state = sweep.init_sweep_state(params, OPTIMIZER, len(objectives), reference=reference)
    traces = []

    def counted(state, batch):
        traces.append(1)
        return sweep.make_sweep_step(model_def, objectives, OPTIMIZER, **kwargs)(state, batch)

    step = jax.jit(counted)
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, batch)
        assert all(v.shape == (len(objectives),) for v in metrics.values())
        losses.append(np.asarray(metrics["loss"]))
    assert len(traces) == 1  # one compiled program for all members and steps
    return state, np.stack(losses, axis=1), metrics


def assert_members_match(setup, objectives, **kwargs):
    """Checks each member against a separate run; returns the sweep's losses and metrics."""
    stacked, losses, metrics = sweep_run(setup, objectives, **kwargs)
    for i, objective in enumerate(objectives):
        state, expected = separate_run(setup, objective)
        np.testing.assert_allclose(losses[i], expected, rtol=1e-5, atol=1e-6)
        member = sweep.unstack_state(stacked, i)
        assert int(member.step) == STEPS
        for a, b in zip(jax.tree.leaves(member.params), jax.tree.leaves(state.params), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    return losses, metrics


def test_beta_sweep_matches_separate_runs(setup):
    objectives = sweep.sweep_objectives(Objective("dpo"), beta=(0.05, 0.1, 0.5))
    losses, _ = assert_members_match(setup, objectives)
    assert len({round(float(x), 6) for x in losses[:, -1]}) == 3  # members really differ
    assert np.all(losses[:, -1] < losses[:, 0])  # and each trained


def test_mixed_objectives_match_separate_runs(setup):
    # Interleaved, so the blocks (dpo, ipo) must be put back in member order.
    objectives = [
        Objective("dpo", {"beta": 0.1}),
        Objective("ipo", {"beta": 0.5}),
        Objective("dpo", {"beta": 0.05}),
        Objective("ipo", {"beta": 1.0}),
    ]
    assert_members_match(setup, objectives)


def test_static_option_splits_blocks(setup):
    # A traced option skips the objective's range check; a static one keeps it.
    objectives = sweep.sweep_objectives(Objective("robust_dpo"), label_smoothing=(0.1, 0.3))
    assert_members_match(setup, objectives, static_options=("label_smoothing",))
    model_def, params, reference, batch = setup
    bad = sweep.sweep_objectives(Objective("robust_dpo"), label_smoothing=(0.1, 0.7))
    step = sweep.make_sweep_step(model_def, bad, OPTIMIZER, static_options=("label_smoothing",))
    state = sweep.init_sweep_state(params, OPTIMIZER, 2, reference=reference)
    with pytest.raises(ValueError, match="label_smoothing"):
        jax.jit(step)(state, batch)


def test_onpolicy_sweep_matches_separate_runs(setup):
    model_def, params, reference, _ = setup
    kwargs = {"reward_fn": onpolicy_test.reward_fn, "group_size": 4, "max_new_tokens": 4}
    objectives = sweep.sweep_objectives(Objective("grpo"), beta=(0.0, 0.5))
    optimizer = optax.sgd(0.5)
    step = sweep.make_sweep_step(
        model_def, objectives, optimizer, step_factory=onpolicy.make_onpolicy_step, **kwargs
    )
    state = sweep.init_sweep_state(params, optimizer, 2, seeds=(0, 1), reference=reference)
    batch = onpolicy_test.make_batch(batch_size=2)
    step = jax.jit(step)
    for _ in range(2):
        state, metrics = step(state, batch)
    for i, objective in enumerate(objectives):
        single = init_state(params, optimizer, seed=i, reference=reference)
        one = jax.jit(onpolicy.make_onpolicy_step(model_def, objective, optimizer, **kwargs))
        for _ in range(2):
            single, expected = one(single, batch)
        member = sweep.unstack_state(state, i)
        np.testing.assert_array_equal(member.rng, single.rng)
        np.testing.assert_allclose(metrics["reward/mean"][i], expected["reward/mean"])
        np.testing.assert_allclose(metrics["loss"][i], expected["loss"], rtol=1e-5, atol=1e-6)
        for a, b in zip(*(jax.tree.leaves(s.params) for s in (member, single)), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_mixed_families_fill_missing_metrics(setup):
    # SFT trains on the chosen side of the same pair batch; its metrics differ from DPO's.
    objectives = [Objective("sft"), Objective("dpo", {"beta": 0.1})]
    _, metrics = assert_members_match(setup, objectives)
    assert np.isnan(metrics["accuracy"][0]) and np.isfinite(metrics["accuracy"][1])
    assert np.isfinite(metrics["logps/mean"][0]) and np.isnan(metrics["logps/mean"][1])
    labels = sweep.member_labels(objectives)
    assert labels == ["sft", "dpo,beta=0.1"]
    flat = sweep.member_metrics(metrics, labels)
    assert flat["dpo,beta=0.1/loss"].shape == ()
    assert flat["sft/loss"] == metrics["loss"][0]


def test_stack_and_unstack_round_trip(setup):
    _, params, reference, _ = setup
    states = [init_state(params, OPTIMIZER, seed=s, reference=reference) for s in (1, 2)]
    stacked = sweep.stack_states(states)
    assert stacked.reference is reference
    for i, s in enumerate(states):
        member = sweep.unstack_state(stacked, i)
        np.testing.assert_array_equal(member.rng, s.rng)
        for a, b in zip(jax.tree.leaves(member.params), jax.tree.leaves(s.params), strict=True):
            np.testing.assert_array_equal(a, b)
    other = init_state(params, OPTIMIZER, reference=jax.tree.map(jnp.copy, reference))
    with pytest.raises(ValueError, match="same reference object"):
        sweep.stack_states([states[0], other])
    per_member = sweep.stack_states([states[0], other], shared_reference=False)
    leaf = jax.tree.leaves(per_member.reference)[0]
    assert leaf.shape[0] == 2


def test_invalid_member_fails_at_build(setup):
    model_def = setup[0]
    with pytest.raises(ValueError, match="does not take option"):
        sweep.make_sweep_step(model_def, [Objective("dpo", {"bta": 0.1})], OPTIMIZER)
    with pytest.raises(ValueError, match="at least one member"):
        sweep.make_sweep_step(model_def, [], OPTIMIZER)
