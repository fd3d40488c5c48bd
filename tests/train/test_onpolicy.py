"""The on-policy step: sample, score, update; it learns a programmatic reward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxpref import models
from jaxpref.train import onpolicy
from jaxpref.train.objectives import Objective
from jaxpref.train.step import init_state, split_model

CONFIG = models.TransformerConfig.tiny(vocab_size=32)
TARGET = 7  # the reward is the fraction of generated tokens equal to this id
GROUP, NEW_TOKENS = 8, 6


def reward_fn(prompt_ids, prompt_mask, tokens, mask):
    hits = jnp.sum((tokens == TARGET) & mask, axis=-1)
    return hits / jnp.maximum(jnp.sum(mask, axis=-1), 1)


PREFERENCE_FN = onpolicy.bradley_terry_preference_fn(reward_fn, scale=5.0)


def make_batch(batch_size=4, prompt_len=5):
    rng = np.random.default_rng(0)
    ids = rng.integers(1, CONFIG.vocab_size, (batch_size, prompt_len)).astype(np.int32)
    mask = np.ones(ids.shape, bool)
    mask[0, :2] = False  # left padding
    ids[~mask] = 0
    return {"prompt_ids": jnp.asarray(ids), "prompt_mask": jnp.asarray(mask)}


@pytest.fixture(scope="module")
def model():
    model_def, params = split_model(models.Transformer(CONFIG, rngs=nnx.Rngs(0)))
    return model_def, params, jax.tree.map(jnp.copy, params)


def build(model, objective, optimizer, **kwargs):
    model_def, params, reference = model
    kwargs = {"group_size": GROUP, "max_new_tokens": NEW_TOKENS, "reward_fn": reward_fn, **kwargs}
    step = onpolicy.make_onpolicy_step(model_def, objective, optimizer, **kwargs)
    return step, init_state(params, optimizer, reference=reference)


def train(model, objective, steps=25, **kwargs):
    optimizer = optax.adam(1e-2)
    step, state = build(model, objective, optimizer, **kwargs)
    traces = []

    def counted(state, batch):
        traces.append(1)
        return step(state, batch)

    jitted, batch, rewards = jax.jit(counted), make_batch(), []
    for _ in range(steps):
        state, metrics = jitted(state, batch)
        assert float(metrics["finite"]) == 1.0
        rewards.append(float(metrics["reward/mean"]))
    assert len(traces) == 1  # no retrace across steps
    assert int(state.step) == steps
    return rewards, metrics


def test_grpo_learns_a_programmatic_reward(model):
    rewards, metrics = train(model, Objective("grpo", {"beta": 0.04}))
    # A random policy emits the target with probability ~1/32.
    assert np.mean(rewards[:5]) < 0.3 and np.mean(rewards[-5:]) > 0.8, rewards
    assert float(metrics["completion_length"]) == NEW_TOKENS  # no end token configured
    assert float(metrics["kl"]) > 0.0
    assert {"loss", "grad_norm", "clip_fraction", "reward/std", "tokens"} <= set(metrics)


def test_online_ipo_learns_from_a_preference_model(model):
    # P(i ≻ j) = σ(5 (r_i - r_j)); β small enough that the regularised optimum is far away.
    objective = Objective("online_ipo", {"beta": 0.02})
    rewards, _ = train(model, objective, preference_fn=PREFERENCE_FN)
    assert np.mean(rewards[:5]) < 0.3 and np.mean(rewards[-5:]) > 0.8, rewards


def test_step_is_pure_and_advances_the_rng(model):
    step, state = build(model, Objective("grpo"), optax.sgd(0.1))
    step = jax.jit(step)
    batch = make_batch()
    s1, m1 = step(state, batch)
    s2, m2 = step(state, batch)
    for a, b in zip(jax.tree.leaves((s1, m1)), jax.tree.leaves((s2, m2)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(s1.rng, state.rng)
    # The next step samples with the new key: different completions, different rewards.
    _, m3 = step(s1, batch)
    assert float(m3["reward/mean"]) != float(m1["reward/mean"]) or float(m3["loss"]) != float(
        m1["loss"]
    )


def test_masked_prompts_do_not_move_the_parameters(model):
    step, state = build(model, Objective("grpo"), optax.sgd(1.0))
    batch = {**make_batch(), "example_mask": jnp.zeros(4, bool)}
    new, metrics = jax.jit(step)(state, batch)
    assert float(metrics["loss"]) == 0.0 and float(metrics["tokens"]) == 0
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_online_ipo_and_its_omd_form_take_the_same_step(model):
    # Over all pairs i < j of a group, Σ (P_ij - ½)(g_i - g_j) = G Σ_i (w_i - ½) g_i
    # = Σ (w_i - w_j)(g_i - g_j) with w_i = (1/G) Σ_k P_ik, so the two losses differ by a
    # constant in θ and one SGD step from the same state (same samples) is the same.
    params = []
    for name in ("online_ipo", "online_ipo_omd"):
        step, state = build(
            model, Objective(name, {"beta": 0.1}), optax.sgd(0.01), preference_fn=PREFERENCE_FN
        )
        params.append(jax.jit(step)(state, make_batch())[0].params)
    for a, b in zip(*(jax.tree.leaves(p) for p in params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("grpo", {"advantages": "rloo"}),
        ("grpo", {"preference_fn": PREFERENCE_FN, "reward_fn": None}),  # Pref-GRPO
        ("grpo", {"num_iterations": 3}),
        ("sppo", {"preference_fn": PREFERENCE_FN}),
        ("egpo", {"preference_fn": PREFERENCE_FN}),
    ],
)
def test_other_objectives_update(model, name, kwargs):
    step, state = build(model, Objective(name), optax.sgd(0.05), **kwargs)
    new, metrics = jax.jit(step)(state, make_batch(batch_size=2))
    assert float(metrics["finite"]) == 1.0 and int(new.step) == 1
    assert all(np.isfinite(v) for v in jax.tree.leaves(metrics))
    pairs = zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params), strict=True)
    assert any(not np.array_equal(a, b) for a, b in pairs)
    if kwargs.get("num_iterations", 1) > 1:  # later iterations see ratios away from 1
        assert float(metrics["ratio_mean"]) != 1.0


def test_invalid_configurations_fail_at_build(model):
    model_def, _, _ = model
    make = lambda objective, **kw: onpolicy.make_onpolicy_step(
        model_def,
        objective,
        optax.sgd(0.1),
        **{"group_size": 4, "max_new_tokens": 3, "reward_fn": reward_fn, **kw},
    )
    with pytest.raises(NotImplementedError, match="geometric mixture"):
        make(Objective("nash_md"), preference_fn=PREFERENCE_FN)
    for offline in ("dpo", "gpm"):
        with pytest.raises(ValueError, match="offline"):
            make(Objective(offline))
    with pytest.raises(ValueError, match="does not take option"):
        make(Objective("grpo", {"bta": 0.1}))
    with pytest.raises(ValueError, match="needs a preference_fn"):
        make(Objective("online_ipo"))
    with pytest.raises(ValueError, match="unused"):
        make(Objective("grpo"), preference_fn=PREFERENCE_FN)
    with pytest.raises(ValueError, match="temperature"):
        make(Objective("grpo"), temperature=0.0)
    with pytest.raises(ValueError, match="group_size"):
        make(Objective("grpo"), group_size=1)
