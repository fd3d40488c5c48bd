"""DPO-step model FLOPs utilisation (MFU) of jaxpref's engine on one accelerator.

Issue 8, benchmark 5: the compiled DPO update (policy forward and backward, frozen reference
model's forward in the same program, chunked log-probs, AdamW) for a ~1B Llama-family model
in bfloat16 on one GPU, reported as achieved TFLOP/s and as a fraction of the device's peak
dense bfloat16 rate. The same script runs on CPU at a small size (``--small``), which is how
the test suite keeps it from rotting; the CPU has no catalogued peak, so MFU is ``n/a`` there
unless ``--peak-tflops`` is given.

Model FLOPs per step (the PaLM convention, Chowdhery et al. 2022, appendix B; no credit for
recomputation): with ``N`` the parameters of the matmuls in the transformer blocks, ``L``
layers, attention width ``H * head_dim`` and sequence length ``T``, one token costs
``2 N + 4 L (H head_dim) T`` FLOPs forward (the attention term counts the full ``T x T``
score matrix, not its causal half), plus ``2 d_model V`` for the vocabulary projection of
the tokens that are scored (response tokens only: jaxpref skips the prompt's projection, and
the count does not credit work that is not needed). Training the policy costs three times
its forward; the reference model one forward. XLA's own count of the compiled step
(``cost_analysis``) is printed next to it as a cross-check.

Usage::

    python benchmarks/dpo_mfu.py                       # Llama-3.2-1B shapes, bf16, on the GPU
    python benchmarks/dpo_mfu.py --pairs 4 --prompt 256 --response 768
    python benchmarks/dpo_mfu.py --small               # tiny model on CPU (minutes)
    python benchmarks/dpo_mfu.py --peak-tflops 989     # a device the table below lacks

Weights are random (nothing is downloaded): the step's cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import random_item_batch

try:
    from jaxpref import models
    from jaxpref.train import objectives, sharded
    from jaxpref.train import step as train_step
except ImportError:  # run as a script from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxpref import models
    from jaxpref.train import objectives, sharded
    from jaxpref.train import step as train_step

#: Peak dense bfloat16 TFLOP/s by device-kind substring (vendor data sheets, no sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0}


def peak_tflops(device_kind: str) -> float | None:
    """The catalogued peak of a device kind, or None."""
    for name, peak in PEAK_BF16_TFLOPS.items():
        if name.lower() in device_kind.lower():
            return peak
    return None


def model_flops(config: models.TransformerConfig, seq: int, tokens: int, scored: int) -> float:
    """Model FLOPs of one DPO step: policy forward+backward, reference forward (see module)."""
    head_dim = config.head_dim or config.d_model // config.num_heads
    attn_width = config.num_heads * head_dim
    kv_width = config.num_kv_heads * head_dim
    per_layer = (
        config.d_model * attn_width * 2  # q and o projections
        + config.d_model * kv_width * 2  # k and v projections
        + 3 * config.d_model * config.mlp_dim  # SwiGLU
    )
    body = 2 * config.num_layers * per_layer * tokens
    attention = 4 * config.num_layers * attn_width * seq * tokens
    head = 2 * config.d_model * config.vocab_size * scored
    forward = body + attention + head
    return 3 * forward + forward  # policy trained, reference forward


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny model (CPU check)")
    parser.add_argument("--pairs", type=int, default=None, help="preference pairs per step")
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens")
    parser.add_argument("--response", type=int, default=None, help="tokens per response")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    parser.add_argument(
        "--param-dtype", default="float32", help="master weights (float32: mixed precision)"
    )
    parser.add_argument("--remat", default="none", help="TransformerConfig.remat policy")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak, bf16")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.small:
        config = models.TransformerConfig.tiny(
            vocab_size=4096, d_model=128, num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=344
        )
        pairs, prompt, response = 2, 16, 48
    else:
        config = models.TransformerConfig.llama3_2_1b()
        pairs, prompt, response = 8, 256, 768
    pairs, prompt, response = args.pairs or pairs, args.prompt or prompt, args.response or response
    config = config.replace(
        param_dtype=jnp.dtype(args.param_dtype), dtype=jnp.bfloat16, remat=args.remat
    )
    device = jax.devices()[0]
    peak = args.peak_tflops or peak_tflops(device.device_kind)

    model = models.Transformer(config, rngs=nnx.Rngs(0))
    model_def, params = train_step.split_model(model)
    reference = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-5, weight_decay=0.0))
    state = train_step.init_state(params, optimizer, reference=reference)
    del model, params
    objective = objectives.Objective("dpo", {"beta": 0.1})
    step_fn = sharded.jit_step(train_step.make_train_step(model_def, objective, optimizer), state)
    host_batch = random_item_batch(config.vocab_size, pairs, 2, prompt, response)
    batch = sharded.place_batch(host_batch, None)

    start = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    memory = compiled.memory_analysis()

    for _ in range(1 + args.warmup):
        state, metrics = step_fn(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)

    seq = prompt + response
    tokens = pairs * 2 * seq
    scored = int(batch["loss_mask"].sum())
    flops = model_flops(config, seq, tokens, scored)
    achieved = flops / step_s / 1e12
    mfu = achieved / peak if peak else None
    stats = device.memory_stats() or {}
    peak_mem = stats.get("peak_bytes_in_use")
    parameters = sum(x.size for x in jax.tree.leaves(state.params))
    result = {
        "device": f"{jax.default_backend()} ({device.device_kind})",
        "parameters": parameters,
        "tokens_per_step": tokens,
        "step_s": step_s,
        "compile_s": compile_s,
        "model_tflop_per_step": flops / 1e12,
        "xla_tflop_per_step": xla_flops / 1e12,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "mfu": mfu,
        "loss": float(metrics["loss"]),
        "peak_memory_gib": None if peak_mem is None else peak_mem / 2**30,
        "temp_memory_gib": memory.temp_size_in_bytes / 2**30 if memory else None,
    }
    print(f"Command: `python {' '.join(sys.argv)}`")
    print(f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"jax {jax.__version__}; device {result['device']}")
    print(
        f"Model: {config.num_layers} layers, d_model {config.d_model}, MLP {config.mlp_dim}, "
        f"{config.num_heads}/{config.num_kv_heads} heads, vocab {config.vocab_size:,}; "
        f"{parameters / 1e9:.3f}B parameters ({args.param_dtype} master, bfloat16 compute, "
        f"remat {args.remat}); {pairs} pairs x ({prompt} + {response}) tokens = {tokens:,} "
        f"tokens/step; {args.steps} timed steps (median)"
    )
    print()
    print("| step (s) | tokens/s | model TFLOP/step | XLA TFLOP/step | TFLOP/s | peak | MFU |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {step_s:.4g} | {tokens / step_s:,.0f} | {flops / 1e12:.4g} | "
        f"{xla_flops / 1e12:.4g} | {achieved:.3g} | {peak or 'n/a'} | "
        f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%'} |"
    )
    print()
    print(
        f"compile {compile_s:.1f} s; XLA temp memory {result['temp_memory_gib']:.2f} GiB; "
        f"device peak memory "
        f"{'n/a' if peak_mem is None else f'{peak_mem / 2**30:.2f} GiB'}; loss {result['loss']:.4f}"
    )
    return result


if __name__ == "__main__":
    main()
