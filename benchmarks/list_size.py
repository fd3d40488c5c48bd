"""Cost against list size K: listwise objectives, a listwise training step, and scoring K
responses with a general preference model (GPM) vs a pairwise preference model.

Three tables:

1. **Objective alone.** ``jax.jit(jax.value_and_grad(loss))`` of every registered
   ``listwise`` objective on random scores ``[lists, K]`` (labels: random scores, all items
   valid), K = 2 .. 64, against DPO applied to all ``K (K - 1) / 2`` pairs of each list
   (higher label chosen; the pairwise decomposition, quadratic in K). Median wall time of
   one call, per list.
2. **Training step.** :func:`jaxpref.train.make_train_step` with ``plackett_luce`` (listwise
   family: scores ``beta * (log pi - log pi_ref)`` of all K items from ONE forward pass of
   ``lists * K`` sequences, reference model in the step) on a small Llama, K = 2 .. 64:
   step time and time per item. The model dominates; the objective is a rounding error.
3. **Forward passes to compare K responses.** The full ``K x K`` table of preference scores
   for K responses to one prompt:

   * GPM (:class:`jaxpref.models.GPMHead` + :func:`jaxpref.losses.general_preference_score`):
     one forward pass per response (K sequences of ``prompt + response`` tokens), then the
     table from the K embeddings;
   * a pairwise preference model (PairRM-style: the backbone reads ``prompt + a + b`` and a
     scalar head gives ``s(a > b)``; skew-symmetry assumed, so one pass per unordered pair):
     ``K (K - 1) / 2`` sequences of ``prompt + 2 * response`` tokens;
   * for reference, a Bradley-Terry reward model (:class:`jaxpref.models.RewardHead`): K
     passes, but it cannot express intransitive preferences.

   Same backbone for all three; inference only (jitted, one batch per K).

Usage::

    python benchmarks/list_size.py            # all three tables
    python benchmarks/list_size.py --small    # fewer K and lists (quick check)
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MODEL = dict(layers=2, d_model=128, mlp=344, heads=4, vocab=4000, prompt=16, response=48)


def _time(fn, *args, repeats: int) -> float:
    """Median seconds of ``fn(*args)`` (already compiled) until its outputs are ready."""
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --------------------------------------------------------------------------- 1. objectives


def objective_table(ks, lists: int, repeats: int) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxpref import losses
    from jaxpref.train.objectives import _positional_names

    names = [n for n in losses.available() if losses.spec(n).family == "listwise"]
    print(f"### 1. Objective alone: value and gradient, {lists:,} lists of K items (float32)")
    print()
    print(
        "Microseconds per list (median of repeated jitted calls); last column: DPO on all "
        "K(K-1)/2 pairs of each list."
    )
    print()
    print("| K | " + " | ".join(names) + " | DPO, all pairs | pairs |")
    print("|---:|" + "---:|" * (len(names) + 2))
    for k in ks:
        rng = np.random.default_rng(k)
        scores = jnp.asarray(rng.normal(size=(lists, k)), jnp.float32)
        labels = jnp.asarray(rng.normal(size=(lists, k)), jnp.float32)
        cells = []
        for name in names:
            fn = losses.get(name)
            args = {"scores": scores, "labels": labels, "policy_scores": scores, "rewards": labels}
            order = _positional_names(fn)

            def loss(s, fn=fn, order=order, args=args):
                values = {**args, "scores": s, "policy_scores": s}
                return fn(*(values[n] for n in order))

            step = jax.jit(jax.value_and_grad(loss))
            cells.append(f"{_time(step, scores, repeats=repeats) / lists * 1e6:.3f}")
        i, j = np.triu_indices(k, 1)
        better = labels[:, i] >= labels[:, j]  # chosen = the higher label

        def all_pairs(s, i=i, j=j, better=better):
            a, b = s[:, i], s[:, j]
            chosen, rejected = jnp.where(better, a, b), jnp.where(better, b, a)
            zeros = jnp.zeros_like(chosen)
            return losses.get("dpo")(chosen, rejected, zeros, zeros)

        step = jax.jit(jax.value_and_grad(all_pairs))
        cells.append(f"{_time(step, scores, repeats=repeats) / lists * 1e6:.3f}")
        print(f"| {k} | " + " | ".join(cells) + f" | {len(i):,} |")
        sys.stdout.flush()
    print()


# --------------------------------------------------------------------------- 2. train step


def _model(cfg: dict, seed: int = 0):
    from _common import model_config
    from flax import nnx

    from jaxpref import models

    config = model_config(cfg, max_position_embeddings=2048)
    return models.Transformer(config, rngs=nnx.Rngs(seed))


def _list_batch(cfg: dict, lists: int, k: int, seed: int = 0) -> dict:
    import numpy as np
    from _common import random_item_batch

    batch = random_item_batch(cfg["vocab"], lists, k, cfg["prompt"], cfg["response"], seed=seed)
    rng = np.random.default_rng(seed + 1)
    return {
        **batch,
        "item_mask": np.ones((lists, k), bool),
        "scores": rng.normal(size=(lists, k)).astype(np.float32),
    }


def step_table(ks, lists: int, steps: int) -> None:
    import jax
    import jax.numpy as jnp
    import optax

    from jaxpref.train import objectives, sharded
    from jaxpref.train import step as train_step

    cfg = MODEL
    print(
        f"### 2. Listwise training step (plackett_luce, beta 0.1), {lists} list(s) of K responses"
    )
    print()
    print(
        f"Model: {cfg['layers']} layers, d_model {cfg['d_model']}, MLP {cfg['mlp']}, "
        f"{cfg['heads']} heads, vocab {cfg['vocab']:,}; {cfg['prompt']} prompt + "
        f"{cfg['response']} response tokens per item; reference model in the step; AdamW; "
        f"median of {steps} steps."
    )
    print()
    print("| K | sequences/step | tokens/step | step (s) | ms per item | compile (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    objective = objectives.Objective("plackett_luce", {"beta": 0.1})
    optimizer = optax.adamw(1e-5, weight_decay=0.0)
    for k in ks:
        model_def, params = train_step.split_model(_model(cfg))
        state = train_step.init_state(params, optimizer, reference=jax.tree.map(jnp.copy, params))
        jitted = sharded.jit_step(
            train_step.make_train_step(model_def, objective, optimizer), state
        )
        batch = sharded.place_batch(_list_batch(cfg, lists, k), None)
        start = time.perf_counter()
        compiled = jitted.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        tokens = lists * k * (cfg["prompt"] + cfg["response"])
        print(
            f"| {k} | {lists * k} | {tokens:,} | {median:.3f} | "
            f"{median / (lists * k) * 1e3:.1f} | {compile_s:.1f} |"
        )
        sys.stdout.flush()
    print()


# --------------------------------------------------------------------------- 3. GPM vs pairs


def preference_table(ks, max_pairwise_k: int, repeats: int) -> None:
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jaxpref import models
    from jaxpref.losses import general_preference_score

    cfg = MODEL
    p, r = cfg["prompt"], cfg["response"]
    backbone = _model(cfg)
    gpm = models.GPMHead(cfg["d_model"], 4, rngs=nnx.Rngs(1))
    reward = models.RewardHead(cfg["d_model"], rngs=nnx.Rngs(2))

    @nnx.jit
    def gpm_table(backbone, head, ids):  # ids [K, P + R]
        mask = jnp.ones(ids.shape, bool)
        emb = head(backbone.hidden_states(ids, attention_mask=mask), mask).embedding
        return general_preference_score(emb[:, None, :], emb[None, :, :])  # [K, K]

    @nnx.jit
    def reward_scores(backbone, head, ids):  # Bradley-Terry: K rewards
        mask = jnp.ones(ids.shape, bool)
        return head(backbone.hidden_states(ids, attention_mask=mask), mask)

    @nnx.jit
    def pairwise_scores(backbone, head, ids):  # ids [K(K-1)/2, P + 2R]: s(a > b) per pair
        mask = jnp.ones(ids.shape, bool)
        return head(backbone.hidden_states(ids, attention_mask=mask), mask)

    print("### 3. Scoring K responses to one prompt: forward passes and time")
    print()
    print(
        f"Backbone: the model of table 2; prompt {p}, response {r} tokens. GPM: K passes of "
        f"{p + r} tokens + the K x K table from embeddings (k = 4 blocks). Pairwise "
        f"preference model: K(K-1)/2 passes of {p + 2 * r} tokens (prompt + a + b), "
        "skew-symmetry assumed. Bradley-Terry reward model: K passes (transitive only). "
        "Inference, jitted, median wall time."
    )
    print()
    print(
        "| K | GPM passes | GPM tokens | GPM (s) | pairwise passes | pairwise tokens "
        "| pairwise (s) | pairwise / GPM time | BT reward (s) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for k in ks:
        rng = np.random.default_rng(k)
        prompt = rng.integers(1, cfg["vocab"], p)
        responses = rng.integers(1, cfg["vocab"], (k, r))
        singles = jnp.asarray(
            np.concatenate([np.broadcast_to(prompt, (k, p)), responses], 1), jnp.int32
        )
        gpm_s = _time(lambda x: gpm_table(backbone, gpm, x), singles, repeats=repeats)
        bt_s = _time(lambda x: reward_scores(backbone, reward, x), singles, repeats=repeats)
        i, j = np.triu_indices(k, 1)
        pairs = len(i)
        pair_cells = ["skipped (K > --max-pairwise-k)", ""]
        ratio = ""
        if k <= max_pairwise_k:
            joint = np.concatenate(
                [np.broadcast_to(prompt, (pairs, p)), responses[i], responses[j]], 1
            )
            pair_s = _time(
                lambda x: pairwise_scores(backbone, reward, x),
                jnp.asarray(joint, jnp.int32),
                repeats=repeats,
            )
            pair_cells = [f"{pair_s:.3f}"]
            ratio = f"{pair_s / gpm_s:.1f}"
        print(
            f"| {k} | {k} | {k * (p + r):,} | {gpm_s:.3f} | {pairs:,} | "
            f"{pairs * (p + 2 * r):,} | {pair_cells[0]} | {ratio} | {bt_s:.3f} |"
        )
        sys.stdout.flush()
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer K and lists (quick)")
    parser.add_argument("--tables", default="1,2,3", help="which tables, e.g. 1,3")
    parser.add_argument("--max-pairwise-k", type=int, default=32)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import jax
    from _common import machine_description

    ks = [2, 4, 8] if args.small else [2, 4, 8, 16, 32, 64]
    tables = set(args.tables.split(","))
    started = time.perf_counter()
    print(f"Command: `python {' '.join(sys.argv)}`")
    print(f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s)")
    load = os.getloadavg()[0]
    print(f"Machine: {machine_description()}; load average (1 min) at start {load:.2f}")
    print()
    if "1" in tables:
        objective_table(ks, lists=256 if args.small else 4096, repeats=5 if args.small else 20)
    if "2" in tables:
        step_table(ks, lists=2, steps=2 if args.small else 3)
    if "3" in tables:
        preference_table(ks, args.max_pairwise_k, repeats=2 if args.small else 3)
    print(
        f"Load average (1 min) at end {os.getloadavg()[0]:.2f}; "
        f"total wall time {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
