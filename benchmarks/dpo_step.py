"""DPO training step on CPU: jaxpref's compiled update vs TRL's and tunix's ``DPOTrainer``.

Every tool trains the same tiny Llama (random init, float32, untied embeddings): 4 layers,
d_model 256, SwiGLU 688, 4 heads (no GQA), vocab 32,000; 8 pairs per step, each a 64-token
prompt and 192-token chosen and rejected responses (16 sequences of 256 tokens per step);
DPO (sigmoid, beta 0.1) against a frozen reference model; AdamW (lr 1e-5, no weight decay)
after global-norm clipping at 1.0. Nothing is downloaded.

* jaxpref (this file, ``--worker``): :func:`jaxpref.train.make_train_step` compiled by
  :func:`jaxpref.train.jit_step` (donated state) with the reference model's parameters in the
  state, i.e. the reference forward inside the same compiled program. A step time is one
  call of the compiled step on a device-resident batch, until its metrics are ready.
  Variants: ``default`` (chunked log-probs from hidden states, the engine's default),
  ``naive`` (``chunked=False``: full ``[.., vocab]`` logits), ``precomputed`` (reference
  log-probs computed once, outside the step, and passed as ``reference_logps``; the
  one-off cost is reported as ``precompute_s``) and ``remat`` (``remat="full"``: every
  layer's activations recomputed in the backward pass). A variant that fails is reported
  in the table with its error, not dropped.
* TRL: ``benchmarks/peers/trl_dpo_step.py`` in its own environment (torch 2.13.0 CPU);
  variants ``default``, ``grad_ckpt``, ``precomputed``. Its docstring says what is timed.
* tunix: ``benchmarks/peers/tunix_dpo_step.py`` in its own environment (google-tunix, JAX);
  variants ``default`` and ``remat``. Its docstring says what is timed.

The driver (default mode) runs every (tool, variant) in a fresh subprocess, ``--rounds``
times, alternating the order each round, with the same thread count for all (XLA uses every
core it is given; torch gets ``set_num_threads``; with ``--threads`` below the core count
every run is pinned with ``taskset``). It prints a markdown table of the median step time
over all timed steps of all rounds, the interquartile range, the ratio to jaxpref's default,
tokens per second and the first-step time (median over rounds; for JAX tools it includes
tracing and compilation, for jaxpref also given separately as compile time).

Usage::

    bash benchmarks/peers/setup.sh                      # once: the peers' environments
    python benchmarks/dpo_step.py                       # full comparison (tens of minutes)
    python benchmarks/dpo_step.py --small --rounds 1    # quick check of every script
    python benchmarks/dpo_step.py --tools jaxpref       # jaxpref variants only
    python benchmarks/dpo_step.py --worker --variant default   # one jaxpref run, JSON line

The peers' environments are looked up in ``$PEERS_DIR`` (default
``~/.cache/jaxpref-bench-peers``); a missing one is reported, not skipped silently.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS_DIR = Path(os.environ.get("PEERS_DIR", Path.home() / ".cache" / "jaxpref-bench-peers"))

FULL = dict(layers=4, d_model=256, mlp=688, heads=4, vocab=32000, prompt=64, response=192, pairs=8)
SMALL = dict(layers=2, d_model=128, mlp=344, heads=4, vocab=4000, prompt=16, response=48, pairs=4)
VARIANTS = {
    "jaxpref": ("default", "naive", "precomputed", "remat"),
    "trl": ("default", "grad_ckpt", "precomputed"),
    "tunix": ("default", "remat"),
}
BETA = 0.1
LEARNING_RATE = 1e-5


# --------------------------------------------------------------------------- jaxpref worker


def _synthetic_batch(cfg: dict, seed: int = 0) -> dict:
    """Pairs in jaxpref's batch layout (``[B, 2, T]``): prompt then response, no padding."""
    from _common import random_item_batch

    return random_item_batch(
        cfg["vocab"], cfg["pairs"], 2, cfg["prompt"], cfg["response"], seed=seed
    )


def run_jaxpref(cfg: dict, variant: str, steps: int, warmup: int, seed: int = 0) -> dict:
    """One jaxpref run in this process; returns the result record."""
    compile_events: list[tuple[str, float]] = []
    import jax

    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: (
            compile_events.append((event, duration))
            if event.startswith("/jax/core/compile/")
            else None
        )
    )
    import flax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    try:
        from jaxpref import models
        from jaxpref.train import objectives, sharded
        from jaxpref.train import step as train_step
    except ImportError:  # run as a script from a source checkout
        sys.path.insert(0, str(REPO))
        from jaxpref import models
        from jaxpref.train import objectives, sharded
        from jaxpref.train import step as train_step

    from _common import model_config

    config = model_config(cfg, remat="full" if variant == "remat" else "none")
    objective = objectives.Objective("dpo", {"beta": BETA})
    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(LEARNING_RATE, weight_decay=0.0)
    )
    model = models.Transformer(config, rngs=nnx.Rngs(seed))
    model_def, params = train_step.split_model(model)
    chunked = variant != "naive"
    host_batch = _synthetic_batch(cfg, seed)
    batch = sharded.place_batch(host_batch, None)
    precompute_s = None
    reference = jax.tree.map(jnp.copy, params)
    if variant == "precomputed":

        @jax.jit
        def reference_logps(ref_params, batch):
            ref_model, _ = model_def.merge(ref_params)
            return objectives.response_logps(ref_model, batch, chunked=chunked)[0]

        reference_logps(reference, batch).block_until_ready()  # compile outside the timing
        start = time.perf_counter()
        batch = {**batch, "reference_logps": reference_logps(reference, batch).block_until_ready()}
        precompute_s = time.perf_counter() - start
        reference = None
    state = train_step.init_state(params, optimizer, seed=seed, reference=reference)
    step_fn = sharded.jit_step(
        train_step.make_train_step(model_def, objective, optimizer, chunked=chunked), state
    )

    compile_events.clear()
    start = time.perf_counter()
    state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    first_step_s = time.perf_counter() - start
    compile_s = sum(d for e, d in compile_events)
    for _ in range(warmup):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    compile_events.clear()
    times, losses = [], []
    for _ in range(steps):
        # Any host<->device transfer inside the step (a round trip) would raise here.
        with jax.transfer_guard("disallow"):
            start = time.perf_counter()
            state, metrics = step_fn(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        losses.append(float(metrics["loss"]))
    recompiles = sum(1 for e, _ in compile_events if e.endswith("backend_compile_duration"))
    return {
        "tool": "jaxpref",
        "variant": variant,
        "first_step_s": first_step_s,
        "compile_s": compile_s,
        "precompute_s": precompute_s,
        "step_s": times,
        "losses": losses,
        "recompiles_during_timing": recompiles,
        "host_transfers_in_step": "none (timed under jax.transfer_guard('disallow'))",
        "jit_cache_size": step_fn._cache_size(),
        "batch_shape": [2 * cfg["pairs"], cfg["prompt"] + cfg["response"]],
        "parameters": sum(x.size for x in jax.tree.leaves(state.params)),
        "threads": os.cpu_count(),
        "versions": {
            "jax": jax.__version__,
            "flax": flax.__version__,
            "optax": optax.__version__,
            "python": platform.python_version(),
        },
        "timed": "one call of the jit_step-compiled step (donated state) until metrics are ready",
    }


# --------------------------------------------------------------------------- driver


def _peer_python(tool: str) -> Path:
    return PEERS_DIR / tool / "bin" / "python"


def _command(tool: str, variant: str, cfg: dict, args) -> list[str]:
    flags = [
        f"--variant={variant}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        *(f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()),
    ]
    if tool == "jaxpref":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", *flags]
    elif tool == "trl":
        cmd = [str(_peer_python("trl")), str(HERE / "peers" / "trl_dpo_step.py"), *flags]
        cmd.append(f"--threads={args.threads}")
    else:
        cmd = [str(_peer_python("tunix")), str(HERE / "peers" / "tunix_dpo_step.py"), *flags]
    if args.threads < (os.cpu_count() or 1):
        cmd = ["taskset", "-c", f"0-{args.threads - 1}", *cmd]
    return cmd


def _environment(threads: int) -> dict:
    env = dict(os.environ)
    # One CPU device for every JAX tool (the test suite's 8 emulated devices would split it).
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _run(tool: str, variant: str, cfg: dict, args) -> dict:
    cmd = _command(tool, variant, cfg, args)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=_environment(args.threads), timeout=3600
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return {"tool": tool, "variant": variant, "error": f"{type(error).__name__}: {error}"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            result["wall_s"] = time.perf_counter() - start
            return result
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    errors = [line.strip() for line in lines if re.match(r"^\s*[\w.]*(Error|Exception)\b", line)]
    reason = errors[-1] if errors else " | ".join(lines[-5:])
    return {
        "tool": tool,
        "variant": variant,
        "error": f"exit {proc.returncode}: {reason}",
        "command": shlex.join(cmd),
    }


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def _report(results: list[dict], cfg: dict, args, started: float, loads: list[float]) -> None:
    tokens = 2 * cfg["pairs"] * (cfg["prompt"] + cfg["response"])
    grouped: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        grouped.setdefault((r["tool"], r["variant"]), []).append(r)
    medians = {}
    for key, runs in grouped.items():
        steps = [s for r in runs if "error" not in r for s in r["step_s"]]
        if steps:
            medians[key] = statistics.median(steps)
    base = medians.get(("jaxpref", "default"))
    print(f"Command: `{shlex.join(['python', *sys.argv])}`")
    print(f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    from _common import machine_description

    print(f"Machine: {machine_description()}")
    print(
        f"Load average (1 min) before each run: min {min(loads):.2f}, "
        f"median {statistics.median(loads):.2f}, max {max(loads):.2f}"
    )
    print(
        f"Model: {cfg['layers']} layers, d_model {cfg['d_model']}, MLP {cfg['mlp']}, "
        f"{cfg['heads']} heads, vocab {cfg['vocab']:,}; {cfg['pairs']} pairs x "
        f"({cfg['prompt']} prompt + {cfg['response']} response) tokens = {tokens:,} tokens/step; "
        f"float32; threads {args.threads}; {args.rounds} round(s) x {args.steps} timed steps "
        f"after {1 + args.warmup} untimed."
    )
    print()
    print(
        "| tool | variant | median step (s) | IQR (s) | x jaxpref default | tokens/s "
        "| first step (s) | compile (s) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (tool, variant), runs in grouped.items():
        errors = [r["error"] for r in runs if "error" in r]
        ok = [r for r in runs if "error" not in r]
        if not ok:
            print(f"| {tool} | {variant} | not run: {errors[0][:300]} | | | | | |")
            continue
        steps = [s for r in ok for s in r["step_s"]]
        lo, hi = _quartiles(steps)
        med = medians[(tool, variant)]
        ratio = f"{med / base:.2f}" if base else "n/a"
        first = statistics.median(r["first_step_s"] for r in ok)
        compiles = [r["compile_s"] for r in ok if r.get("compile_s") is not None]
        compile_cell = f"{statistics.median(compiles):.1f}" if compiles else "-"
        d = 2 if med >= 1 else 3
        print(
            f"| {tool} | {variant} | {med:.{d}f} | {lo:.{d}f}-{hi:.{d}f} | {ratio} | "
            f"{tokens / med:,.0f} | {first:.1f} | {compile_cell} |"
        )
    print()
    notes = []
    for (tool, variant), runs in grouped.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            continue
        r = ok[0]
        extra = []
        if r.get("precompute_s") is not None:
            precompute = statistics.median(x["precompute_s"] for x in ok)
            extra.append(f"reference precompute {precompute:.2f} s once")
        if "recompiles_during_timing" in r:
            recompiles = sum(x["recompiles_during_timing"] for x in ok)
            extra.append(f"recompiles while timed: {recompiles}; no host transfer inside a step")
        if r.get("setup_s") is not None:
            extra.append(f"setup {statistics.median(x['setup_s'] for x in ok):.1f} s")
        if r.get("parameters") is not None:
            extra.insert(0, f"{r['parameters']:,} trained parameters")
        versions = ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
        notes.append(f"- {tool} {variant}: {versions}" + (f"; {'; '.join(extra)}" if extra else ""))
    print("\n".join(notes))
    print()
    print(f"Total wall time: {time.perf_counter() - started:.0f} s")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="run one jaxpref variant here")
    parser.add_argument("--variant", default="default", help="worker: the jaxpref variant")
    parser.add_argument("--small", action="store_true", help="a small config (quick check)")
    parser.add_argument("--tools", default="jaxpref,trl,tunix", help="comma-separated")
    parser.add_argument(
        "--variants", default=None, help="comma-separated tool:variant list (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", default=None, help="also write every run's record here")
    for key, value in FULL.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"{value}")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = dict(SMALL if args.small else FULL)
    for key in FULL:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.worker:
        result = run_jaxpref(cfg, args.variant, args.steps, args.warmup)
        print("RESULT " + json.dumps(result), flush=True)
        return
    tools = [t for t in args.tools.split(",") if t]
    if args.variants:
        runs = [tuple(v.split(":", 1)) for v in args.variants.split(",")]
    else:
        runs = [(tool, variant) for tool in tools for variant in VARIANTS[tool]]
    started, results, loads = time.perf_counter(), [], []
    for round_index in range(args.rounds):
        shift = round_index % len(runs)
        order = runs[shift:] + runs[:shift]  # alternate which tool goes first
        if round_index % 2:
            order = order[::-1]
        for tool, variant in order:
            if tool != "jaxpref" and not _peer_python(tool).exists():
                result = {
                    "tool": tool,
                    "variant": variant,
                    "error": f"no environment at {_peer_python(tool)}; run "
                    f"`bash benchmarks/peers/setup.sh {tool}`",
                }
            else:
                loads.append(os.getloadavg()[0])
                result = _run(tool, variant, cfg, args)
            results.append(result)
            summary = (
                result["error"][:200]
                if "error" in result
                else f"median {statistics.median(result['step_s']):.3f} s, "
                f"first {result['first_step_s']:.1f} s"
            )
            print(f"[round {round_index + 1}] {tool}:{variant}: {summary}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    _report(results, cfg, args, started, loads or [os.getloadavg()[0]])


if __name__ == "__main__":
    main()
