"""DPO step throughput on an emulated 8-device CPU mesh: data parallel vs FSDP vs FSDP+tensor.

The same model, batch and step as ``benchmarks/dpo_step.py`` (tiny Llama: 4 layers, d_model
256, MLP 688, 4 heads, vocab 32,000; 8 pairs of 64 prompt + 192 response tokens; DPO with a
frozen reference model in the compiled step; AdamW after clipping; float32), run through
the engine's sharded path exactly as :func:`jaxpref.train.train` does it:
``make_mesh`` -> ``shard_model`` with the layout's ``ShardingRules`` -> ``split_model`` ->
``init_state`` -> ``place_state`` -> ``jit_step`` (fixed out-shardings, donated state) with
``sharded_logps_fn`` (log-probs under ``shard_map``) -> ``place_batch``.

Layouts (mesh ``(data, fsdp, tensor)``, rules):

* single device, no mesh (the reference point);
* data parallel ``(8, 1, 1)``, ``ShardingRules.data_parallel()``: parameters replicated;
* FSDP ``(1, 8, 1)``, ``ShardingRules.fsdp()``: every ``embed`` dimension split 8 ways;
* FSDP+tensor ``(1, 4, 2)`` and ``(2, 2, 2)``, ``ShardingRules.fsdp_tensor()``: heads, MLP
  and vocab also split over ``tensor``.

The last column counts XLA's "[SPMD] Involuntary full rematerialization" warnings while
compiling the layout (a tensor the partitioner could only reshard by replicating it first),
read from the C++ log on file descriptor 2.

The 8 devices are emulated with ``--xla_force_host_platform_device_count=8`` on however
many cores the machine has (2 here), so the numbers measure the *overhead* of each layout
(collectives, resharding copies, smaller per-device matmuls) on the same total compute, not
a speed-up. Correctness (equality with the single-device run) is tested in
``tests/train/test_sharded_step.py``, not here.

Reported per layout: median step time over ``--steps`` timed steps after one warm-up step,
tokens/s (``2 * pairs * (prompt + response)`` tokens per step), the ratio to the single
device, compile time, and XLA's temp memory per device.

Usage::

    python benchmarks/mesh_throughput.py            # the DPO benchmark config
    python benchmarks/mesh_throughput.py --small    # a small config (quick check)
    python benchmarks/mesh_throughput.py --compile-only   # no timing: memory, warnings
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICES = 8
LAYOUTS = (
    ("single device", None, None),
    ("data parallel", (8, 1, 1), "data_parallel"),
    ("FSDP", (1, 8, 1), "fsdp"),
    ("FSDP+tensor", (1, 4, 2), "fsdp_tensor"),
    ("data+FSDP+tensor", (2, 2, 2), "fsdp_tensor"),
)


def run_layout(cfg: dict, mesh_shape, preset, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from jaxpref import models
    from jaxpref.train import objectives, sharded
    from jaxpref.train import step as train_step
    from jaxpref.train.mesh import make_mesh

    sys.path.insert(0, str(REPO / "benchmarks"))
    from _common import model_config
    from dpo_step import BETA, LEARNING_RATE, _synthetic_batch

    config = model_config(cfg)
    model = models.Transformer(config, rngs=nnx.Rngs(0))
    mesh = None
    if mesh_shape is not None:
        mesh = make_mesh(mesh_shape)
        model = models.shard_model(model, mesh, getattr(models.ShardingRules, preset)())
    model_def, params = train_step.split_model(model)
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(LEARNING_RATE, weight_decay=0.0)
    )
    state = train_step.init_state(params, optimizer, reference=jax.tree.map(jnp.copy, params))
    if mesh is not None:
        state = sharded.place_state(state, mesh)
    logps_fn = sharded.sharded_logps_fn(mesh) if mesh is not None else None
    objective = objectives.Objective("dpo", {"beta": BETA})
    jitted = sharded.jit_step(
        train_step.make_train_step(model_def, objective, optimizer, logps_fn=logps_fn),
        state,
        mesh=mesh,
    )
    batch = sharded.place_batch(_synthetic_batch(cfg), mesh)
    start = time.perf_counter()
    with _captured_stderr() as log:
        compiled = jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    remats = log[0].count("Involuntary full rematerialization")
    memory = compiled.memory_analysis()
    temp_mib = memory.temp_size_in_bytes / 2**20 if memory is not None else float("nan")
    if steps == 0:  # compile only
        return {
            "step_s": [],
            "compile_s": compile_s,
            "temp_mib": temp_mib,
            "loss": None,
            "involuntary_remats": remats,
        }
    state, metrics = compiled(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    times, loss = [], None
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
        loss = float(metrics["loss"])
    return {
        "step_s": times,
        "compile_s": compile_s,
        "temp_mib": temp_mib,
        "loss": loss,
        "involuntary_remats": remats,
    }


@contextlib.contextmanager
def _captured_stderr():
    """Redirects file descriptor 2 (XLA's C++ log) to a temporary file while compiling.

    Yields a list that holds the captured text once the block has exited.
    """
    captured: list[str] = []
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small config (quick check)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per layout")
    parser.add_argument(
        "--compile-only", action="store_true", help="compile time, memory, SPMD warnings only"
    )
    args = parser.parse_args()
    # Before JAX is imported: 8 emulated CPU devices (a script's own process, not a library).
    flag = f"--xla_force_host_platform_device_count={DEVICES}"
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    os.environ["XLA_FLAGS"] = " ".join([*flags, flag])
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    import jax
    from _common import machine_description
    from dpo_step import FULL, SMALL

    cfg = dict(SMALL if args.small else FULL)
    if args.small:
        cfg["pairs"] = 8  # divisible by the 8-way batch split
    tokens = 2 * cfg["pairs"] * (cfg["prompt"] + cfg["response"])
    print(f"Command: `python {' '.join(sys.argv)}`")
    print(f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"jax {jax.__version__}, {jax.device_count()} emulated CPU devices")
    load = os.getloadavg()[0]
    print(f"Machine: {machine_description()}; load average (1 min) at start {load:.2f}")
    print(
        f"Model: {cfg['layers']} layers, d_model {cfg['d_model']}, MLP {cfg['mlp']}, "
        f"{cfg['heads']} heads, vocab {cfg['vocab']:,}; {cfg['pairs']} pairs x "
        f"({cfg['prompt']} + {cfg['response']}) = {tokens:,} tokens/step; DPO with the "
        f"reference model in the step; float32; median of {args.steps} steps."
    )
    print()
    print(
        "| layout | mesh (data, fsdp, tensor) | rules | median step (s) | tokens/s "
        "| x single device | compile (s) | temp MiB/device | SPMD involuntary remats |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    base = None
    started = time.perf_counter()
    for name, shape, preset in LAYOUTS:
        try:
            result = run_layout(cfg, shape, preset, 0 if args.compile_only else args.steps)
        except Exception as error:  # report the row, keep the table
            print(
                f"| {name} | {shape} | {preset} | failed: {type(error).__name__}: "
                f"{str(error).splitlines()[0][:200]} | | | | | |"
            )
            continue
        if result["step_s"]:
            median = statistics.median(result["step_s"])
            base = base or median
            timing = f"{median:.3f} | {tokens / median:,.0f} | {median / base:.2f}"
        else:
            timing = "- | - | -"
        print(
            f"| {name} | {shape or '-'} | {preset or '-'} | {timing} | "
            f"{result['compile_s']:.1f} | {result['temp_mib']:,.0f} | "
            f"{result['involuntary_remats']} |"
        )
        sys.stdout.flush()
    print()
    print(
        f"Load average (1 min) at end {os.getloadavg()[0]:.2f}; "
        f"total wall time {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
