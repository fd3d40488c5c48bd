"""Every offline family trains through the same step: its loss falls on a learnable batch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxpref import models
from jaxpref.train.objectives import Objective
from jaxpref.train.step import init_state, make_train_step, split_model

VOCAB = 32
CONFIG = models.TransformerConfig.tiny(vocab_size=VOCAB)
PROMPT, RESPONSE = 4, 4
TIME = PROMPT + RESPONSE


def token_arrays(ids):
    """Batch token arrays for ``ids [..., T]`` whose last RESPONSE tokens are the response."""
    targets = np.concatenate([ids[..., 1:], np.zeros((*ids.shape[:-1], 1), np.int32)], -1)
    loss_mask = np.zeros(ids.shape, bool)
    loss_mask[..., PROMPT - 1 : TIME - 1] = True  # targets that are response tokens
    return {
        "input_ids": ids.astype(np.int32),
        "targets": targets.astype(np.int32),
        "loss_mask": loss_mask,
        "attention_mask": np.ones(ids.shape, bool),
        "positions": np.broadcast_to(np.arange(TIME), ids.shape).astype(np.int32),
    }


def responses(rng, batch, good):
    prompt = rng.integers(1, VOCAB, (batch, PROMPT))
    if good:
        response = np.repeat(prompt[:, :1], RESPONSE, axis=1)  # repeat the first prompt token
    else:
        response = rng.integers(1, VOCAB, (batch, RESPONSE))
    return prompt, response


def pair_batch(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    prompt, good = responses(rng, batch, True)
    bad = rng.integers(1, VOCAB, (batch, RESPONSE))
    ids = np.stack([np.concatenate([prompt, good], 1), np.concatenate([prompt, bad], 1)], 1)
    return {**token_arrays(ids), "example_mask": np.ones(batch, bool)}


def list_batch(batch=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    prompt, good = responses(rng, batch, True)
    rows = [np.concatenate([prompt, good], 1)]
    half = good.copy()
    half[:, RESPONSE // 2 :] = rng.integers(1, VOCAB, (batch, RESPONSE - RESPONSE // 2))
    rows.append(np.concatenate([prompt, half], 1))
    rows.append(np.concatenate([prompt, rng.integers(1, VOCAB, (batch, RESPONSE))], 1))
    ids = np.stack(rows[:k], 1)
    scores = np.tile(np.array([2.0, 1.0, 0.0][:k], np.float32), (batch, 1))
    return {
        **token_arrays(ids),
        "scores": scores,
        "item_mask": np.ones((batch, k), bool),
        "example_mask": np.ones(batch, bool),
    }


def unpaired_batch(batch=8, seed=0):
    rng = np.random.default_rng(seed)
    desirable = np.arange(batch) % 2 == 0
    prompt, good = responses(rng, batch, True)
    bad = rng.integers(1, VOCAB, (batch, RESPONSE))
    ids = np.concatenate([prompt, np.where(desirable[:, None], good, bad)], 1)
    return {**token_arrays(ids), "desirable": desirable, "example_mask": np.ones(batch, bool)}


def run(objective, batch, head=None, steps=25, learning_rate=3e-3, reference=True):
    model = models.Transformer(CONFIG, rngs=nnx.Rngs(0))
    model_def, params = split_model(model, head)
    optimizer = optax.adam(learning_rate)
    ref = jax.tree.map(jnp.copy, params) if reference else None
    state = init_state(params, optimizer, reference=ref)
    step = jax.jit(make_train_step(model_def, objective, optimizer))
    history = []
    for i in range(steps):
        state, metrics = step(state, batch if callable(batch) is False else batch(i))
        history.append({k: float(v) for k, v in metrics.items()})
    return history, state


@pytest.mark.parametrize(
    ("objective", "make_batch"),
    [
        (Objective("dpo", {"beta": 0.5}), pair_batch),
        (Objective("ipo", {"beta": 0.5}), pair_batch),
        (Objective("simpo", {"beta": 2.0, "gamma": 0.5}), pair_batch),
        (Objective("orpo", {"beta": 0.5}), pair_batch),
        (Objective("plackett_luce", {"beta": 0.5}), list_batch),
        (Objective("lipo_lambda", {"beta": 0.5}), list_batch),
        (Objective("kto", {"beta": 0.5}), unpaired_batch),
        (Objective("sft"), unpaired_batch),
    ],
    ids=lambda x: getattr(x, "name", ""),
)
def test_family_trains(objective, make_batch):
    history, state = run(objective, make_batch())
    assert history[-1]["loss"] < history[0]["loss"] - 0.05, (history[0], history[-1])
    assert all(h["finite"] == 1.0 for h in history)
    assert int(state.step) == len(history)


def test_reward_model_learns_the_preference():
    head = models.RewardHead(CONFIG.d_model, rngs=nnx.Rngs(1))
    history, _ = run(Objective("bradley_terry"), pair_batch(), head=head, reference=False)
    assert history[-1]["loss"] < 0.3 and history[-1]["accuracy"] == 1.0


def test_gpm_model_learns_the_preference():
    head = models.GPMHead(CONFIG.d_model, 2, prompt_dependent=True, rngs=nnx.Rngs(1))
    history, _ = run(Objective("gpm"), pair_batch(), head=head, reference=False)
    assert history[-1]["loss"] < history[0]["loss"] - 0.2
    assert history[-1]["accuracy"] == 1.0


def test_precomputed_reference_equals_the_reference_model():
    batch = pair_batch()
    objective = Objective("dpo", {"beta": 0.5})
    model = models.Transformer(CONFIG, rngs=nnx.Rngs(0))
    model_def, params = split_model(model)
    from jaxpref.train.objectives import response_logps

    reference_logps, _ = response_logps(model, jax.tree.map(jnp.asarray, batch))
    optimizer = optax.sgd(0.1)
    with_model = init_state(params, optimizer, reference=jax.tree.map(jnp.copy, params))
    without = init_state(params, optimizer)
    step = jax.jit(make_train_step(model_def, objective, optimizer))
    s1, m1 = step(with_model, batch)
    s2, m2 = step(without, {**batch, "reference_logps": np.asarray(reference_logps)})
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_missing_reference_is_a_clear_error():
    model = models.Transformer(CONFIG, rngs=nnx.Rngs(0))
    model_def, params = split_model(model)
    optimizer = optax.sgd(0.1)
    step = make_train_step(model_def, Objective("dpo"), optimizer)
    with pytest.raises(ValueError, match="needs reference log-probs"):
        step(init_state(params, optimizer), pair_batch())


def test_unknown_option_and_on_policy_family_are_rejected():
    with pytest.raises(ValueError, match="does not take option"):
        Objective("dpo", {"gamma": 1.0}).validate()
    with pytest.raises(ValueError, match="on-policy"):
        Objective("online_ipo").validate()
    with pytest.raises(KeyError, match="known objectives"):
        Objective("dpoo").validate()


def test_next_round_makes_the_policy_the_reference():
    from jaxpref.train.step import start_next_round

    history, state = run(Objective("dpo", {"beta": 0.5}), pair_batch(), steps=10)
    assert history[-1]["loss"] < 0.6
    model_def, _ = split_model(models.Transformer(CONFIG, rngs=nnx.Rngs(0)))
    state = start_next_round(state)
    step = jax.jit(make_train_step(model_def, Objective("dpo", {"beta": 0.5}), optax.sgd(0.0)))
    _, metrics = step(state._replace(opt_state=optax.sgd(0.0).init(state.params)), pair_batch())
    np.testing.assert_allclose(metrics["loss"], np.log(2.0), rtol=1e-5)  # h = 0 again


def test_bfloat16_compute_keeps_float32_master_weights():
    config = CONFIG.replace(dtype=jnp.bfloat16)
    model = models.Transformer(config, rngs=nnx.Rngs(0))
    model_def, params = split_model(model)
    optimizer = optax.adam(3e-3)
    state = init_state(params, optimizer, reference=jax.tree.map(jnp.copy, params))
    step = jax.jit(make_train_step(model_def, Objective("dpo", {"beta": 0.5}), optimizer))
    losses = []
    for _ in range(15):
        state, metrics = step(state, pair_batch())
        losses.append(float(metrics["loss"]))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_tr_dpo_reference_refresh_mixes_policy_into_reference():
    from jaxpref.train.loop import _refresh_reference

    _, state = run(Objective("dpo", {"beta": 0.5}), pair_batch(), steps=5)
    before = state.reference
    mixed = _refresh_reference(0.25)(state)
    for p, r0, r1 in zip(
        jax.tree.leaves(state.params),
        jax.tree.leaves(before),
        jax.tree.leaves(mixed.reference),
        strict=True,
    ):
        np.testing.assert_allclose(r1, 0.25 * np.asarray(p) + 0.75 * np.asarray(r0), atol=1e-6)
    hard = _refresh_reference(1.0)(state)
    for p, r in zip(jax.tree.leaves(state.params), jax.tree.leaves(hard.reference), strict=True):
        np.testing.assert_array_equal(p, r)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_rematerialised_model_trains_through_the_engine(remat):
    """Regression: nnx.remat used to fail under the engine's functional value_and_grad."""
    batch = pair_batch()
    results = []
    for policy in ("none", remat):
        model = models.Transformer(CONFIG.replace(remat=policy), rngs=nnx.Rngs(0))
        model_def, params = split_model(model)
        optimizer = optax.sgd(0.1)
        state = init_state(params, optimizer, reference=jax.tree.map(jnp.copy, params))
        step = jax.jit(make_train_step(model_def, Objective("dpo", {"beta": 0.5}), optimizer))
        state, metrics = step(state, batch)
        state, metrics = step(state, batch)
        results.append((float(metrics["loss"]), jax.tree.leaves(state.params)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for a, b in zip(results[1][1], results[0][1], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
