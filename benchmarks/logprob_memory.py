"""Compiled memory of a DPO gradient: full logits vs. chunked log-probs from hidden states.

For the gradient of the DPO loss with respect to (final hidden states, unembedding) this
compiles, without running, two versions of the same step:

* naive: ``logits = hidden @ unembedding`` then :func:`jaxpref.logprobs.sequence_logps`;
* chunked: :func:`jaxpref.logprobs.sequence_logps_from_hidden` (automatic chunk size);

and prints a markdown table of XLA's compiled temporary memory (``temp_size_in_bytes``: the
scratch buffers, not arguments or outputs) and the ratio chunked/naive. Chosen and rejected
responses are stacked on a pair axis: hidden ``[batch, 2, time, d_model]``. The loss is
``-log_sigmoid(beta * ((pc - rc) - (pr - rr)))`` with reference log-probs as constant inputs.

Usage::

    python benchmarks/logprob_memory.py          # vocab 32k/128k/256k x seq 1k/4k/16k, d 2048
    python benchmarks/logprob_memory.py --small  # vocab 32k, seq 1k, d_model 256 (quick)
    python benchmarks/logprob_memory.py --execute  # also run each cell (on a GPU)

Nothing is allocated: inputs are :class:`jax.ShapeDtypeStruct`, so configurations larger
than the machine's memory still compile. Numbers are for the default JAX backend.

With ``--execute`` every cell is also run for real, each in a fresh process, and the table
gains the device's measured peak memory during the gradient minus the inputs' own size
(``peak_bytes_in_use`` from ``Device.memory_stats()``; backends without memory statistics,
such as the CPU, report ``n/a``). A cell that runs out of memory is reported as such.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

try:
    from jaxpref.logprobs import sequence_logps, sequence_logps_from_hidden
except ImportError:  # run as a script from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jaxpref.logprobs import sequence_logps, sequence_logps_from_hidden

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_description

BETA = 0.1
MIB = 2**20


def naive_logps(hidden, unembedding, targets, where):
    return sequence_logps(hidden @ unembedding, targets, where=where)


def chunked_logps(hidden, unembedding, targets, where):
    return sequence_logps_from_hidden(hidden, unembedding, targets, where=where)


def dpo_grad_fn(logps_fn: Callable) -> Callable:
    """Gradient of the mean DPO loss wrt (hidden, unembedding)."""

    def loss(hidden, unembedding, targets, where, reference_logps):
        logps = logps_fn(hidden, unembedding, targets, where)  # [batch, 2]
        pc, pr = logps[:, 0], logps[:, 1]
        rc, rr = reference_logps[:, 0], reference_logps[:, 1]
        return jnp.mean(-jax.nn.log_sigmoid(BETA * ((pc - rc) - (pr - rr))))

    return jax.grad(loss, argnums=(0, 1))


def compiled_temp_mib(logps_fn: Callable, batch: int, time_: int, d_model: int, vocab: int):
    """Returns (temp MiB, compile seconds), or the reason it failed as a string."""
    specs = (
        jax.ShapeDtypeStruct((batch, 2, time_, d_model), jnp.float32),
        jax.ShapeDtypeStruct((d_model, vocab), jnp.float32),
        jax.ShapeDtypeStruct((batch, 2, time_), jnp.int32),
        jax.ShapeDtypeStruct((batch, 2, time_), jnp.bool_),
        jax.ShapeDtypeStruct((batch, 2), jnp.float32),
    )
    start = time.perf_counter()
    try:
        compiled = jax.jit(dpo_grad_fn(logps_fn)).lower(*specs).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
    except Exception as error:  # report the cell as n/a rather than abort the table
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return f"n/a ({reason[:80]})"
    return temp / MIB, time.perf_counter() - start


def executed_peak_mib(path: str, batch: int, time_: int, d_model: int, vocab: int) -> str:
    """Runs one gradient for real in this process; the peak device memory above the inputs."""
    logps_fn = {"naive": naive_logps, "chunked": chunked_logps}[path]
    keys = jax.random.split(jax.random.key(0), 3)
    inputs = (
        jax.random.normal(keys[0], (batch, 2, time_, d_model), jnp.float32),
        0.02 * jax.random.normal(keys[1], (d_model, vocab), jnp.float32),
        jax.random.randint(keys[2], (batch, 2, time_), 0, vocab),
        jnp.broadcast_to(jnp.arange(time_) >= time_ // 4, (batch, 2, time_)),  # 1/4 prompt
        jnp.zeros((batch, 2), jnp.float32),
    )
    jax.block_until_ready(inputs)
    stats = jax.devices()[0].memory_stats()
    before = stats.get("bytes_in_use", 0) if stats else 0
    try:
        grads = jax.jit(dpo_grad_fn(logps_fn))(*inputs)
        jax.block_until_ready(grads)
    except Exception as error:  # out of memory, most likely: that is the cell's result
        return f"failed ({type(error).__name__})"
    if not all(bool(jnp.isfinite(g).all()) for g in grads):
        return "non-finite gradient"
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return "n/a"
    return f"{(stats['peak_bytes_in_use'] - before) / MIB:,.1f}"


def _execute_in_subprocess(path: str, batch: int, time_: int, d_model: int, vocab: int) -> str:
    """A fresh process per cell, so each peak is that cell's alone."""
    import subprocess

    cell = f"{path},{batch},{time_},{d_model},{vocab}"
    done = subprocess.run(
        [sys.executable, __file__, "--cell", cell], capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return f"failed (exit {done.returncode})"
    return lines[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--small", action="store_true", help="only vocab 32k, seq 1k, d_model 256 (quick)"
    )
    parser.add_argument("--execute", action="store_true", help="also run every cell for real")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # internal, one cell
    args = parser.parse_args()
    if args.cell:
        path, *sizes = args.cell.split(",")
        print(executed_peak_mib(path, *map(int, sizes)))
        return
    if args.small:
        d_model, vocabs, seqs = 256, [32768], [1024]
    else:
        d_model, vocabs, seqs = 2048, [32768, 131072, 262144], [1024, 4096, 16384]
    batch = 1

    device = jax.devices()[0]
    print(f"Command: `python {' '.join(sys.argv)}`")
    print(f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}")
    print(f"jax {jax.__version__}, backend {jax.default_backend()} ({device.device_kind})")
    print(f"Machine: {machine_description()}")
    print(
        f"Gradient of the DPO loss wrt (hidden, unembedding); float32; batch {batch} pair "
        f"(hidden [{batch}, 2, seq, {d_model}]); XLA compiled temp memory (compile only)."
    )
    print()
    header = "| vocab | seq | tokens | naive temp (MiB) | chunked temp (MiB) | chunked / naive |"
    rule = "|---:|---:|---:|---:|---:|---:|"
    if args.execute:
        header += " naive peak, run (MiB) | chunked peak, run (MiB) |"
        rule += "---:|---:|"
    print(header)
    print(rule)
    total_start = time.perf_counter()
    for vocab in vocabs:
        for seq in seqs:
            naive = compiled_temp_mib(naive_logps, batch, seq, d_model, vocab)
            chunked = compiled_temp_mib(chunked_logps, batch, seq, d_model, vocab)
            cells = [c if isinstance(c, str) else f"{c[0]:,.1f}" for c in (naive, chunked)]
            if isinstance(naive, str) or isinstance(chunked, str):
                ratio = "n/a"
            else:
                ratio = f"{chunked[0] / naive[0]:.4f}"
            tokens = batch * 2 * seq
            row = f"| {vocab:,} | {seq:,} | {tokens:,} | {cells[0]} | {cells[1]} | {ratio} |"
            if args.execute:
                for path in ("naive", "chunked"):
                    row += f" {_execute_in_subprocess(path, batch, seq, d_model, vocab)} |"
            print(row)
            sys.stdout.flush()
    print()
    print(f"Total time: {time.perf_counter() - total_start:.1f} s")


if __name__ == "__main__":
    main()
