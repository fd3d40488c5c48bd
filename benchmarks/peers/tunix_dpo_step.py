"""tunix's ``DPOTrainer`` step on the benchmark's tiny Llama (JAX, CPU): the tunix side of
``benchmarks/dpo_step.py``.

Run it with the tunix environment that ``benchmarks/peers/setup.sh`` creates (never
jaxpref's)::

    ~/.cache/jaxpref-bench-peers/tunix/bin/python benchmarks/peers/tunix_dpo_step.py

Nothing is downloaded: the model is tunix's own ``tunix.models.llama3.model.Llama3`` built
from a ``ModelConfig`` in code (float32, untied embeddings). tunix initialises the MLP kernels
to zero; every kernel is re-drawn from N(0, 0.02²) here (norm scales stay 1), the same
initialisation as the other two tools, which does not change the arithmetic. The reference is
a second ``Llama3`` holding a copy of the same parameters. Batches are tunix's tokenized
``TrainingInput`` layout (``prompt_ids`` / ``prompt_mask`` left-padded, ``chosen_ids`` /
``rejected_ids`` and masks right-padded; here nothing is padded: every prompt has ``--prompt``
tokens and every response ``--response``).

What is timed: one call of ``trainer.train([batch])`` per step, with
``trainer.is_managed_externally = True`` so that tunix's loop neither skips already-seen
examples nor closes the trainer between calls. One call is one iteration of tunix's own
training loop: ``_prepare_inputs`` (concatenating chosen and rejected, masks and positions,
the jitted reference forward ``compute_logps``), ``shard_input``, the jitted train step
(``nnx.jit``, donated optimizer: policy forward on chosen+rejected, DPO loss, backward,
AdamW update), metric buffering; the call returns after tunix's throttler has waited for
the step's results, so the time is the full synchronous step. The first call includes the
two compilations (reference ``compute_logps`` and the train step) and is reported as the
first-step time.

Variants: ``default`` (``RematConfig.NONE``, tunix's default) and ``remat``
(``RematConfig.DECODER``: each decoder layer rematerialised in the backward pass).

Optimizer: ``optax.chain(clip_by_global_norm(1.0), adamw(1e-5, weight_decay=0))`` as in
the other two tools. Prints one line ``RESULT {json}`` for the driver.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import peer_parser


def parse_args(argv=None):
    parser = peer_parser(__doc__.splitlines()[0], ["default", "remat"])
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import importlib.metadata as metadata

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from tunix.models.llama3 import model as llama3
    from tunix.sft.dpo import dpo_trainer

    remat = llama3.RematConfig.DECODER if args.variant == "remat" else llama3.RematConfig.NONE
    config = llama3.ModelConfig(
        num_layers=args.layers,
        vocab_size=args.vocab,
        embed_dim=args.d_model,
        hidden_dim=args.mlp,
        num_heads=args.heads,
        head_dim=args.d_model // args.heads,
        num_kv_heads=args.heads,
        rope_theta=10_000,
        norm_eps=1e-5,
        weight_tying=False,
        remat_config=remat,
    )
    policy = llama3.Llama3(config, rngs=nnx.Rngs(args.seed))
    graph, params = nnx.split(policy, nnx.Param)
    keys = iter(jax.random.split(jax.random.key(args.seed + 1), len(jax.tree.leaves(params))))

    def redraw(x):
        key = next(keys)
        return x if x.ndim < 2 else 0.02 * jax.random.normal(key, x.shape, x.dtype)

    params = jax.tree.map(redraw, params)
    nnx.update(policy, params)
    reference = nnx.merge(graph, jax.tree.map(jnp.copy, params))

    rng = np.random.default_rng(args.seed)
    b, p, r = args.pairs, args.prompt, args.response
    ids = lambda n: jnp.asarray(rng.integers(1, args.vocab, (b, n)), jnp.int32)
    ones = lambda n: jnp.ones((b, n), jnp.int32)
    batch = {
        "prompt_ids": ids(p),
        "prompt_mask": ones(p),
        "chosen_ids": ids(r),
        "chosen_mask": ones(r),
        "rejected_ids": ids(r),
        "rejected_mask": ones(r),
    }
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-5, weight_decay=0.0))
    total_steps = 1 + args.warmup + args.steps
    training_config = dpo_trainer.DPOTrainingConfig(
        eval_every_n_steps=10**9,
        max_steps=total_steps,
        beta=0.1,
        pbar_description=None,
    )
    setup_start = time.perf_counter()
    trainer = dpo_trainer.DPOTrainer(policy, reference, optimizer, training_config)
    trainer.is_managed_externally = True  # one train() call = one loop iteration, no close()
    setup_s = time.perf_counter() - setup_start

    times = []
    for _ in range(total_steps):
        start = time.perf_counter()
        trainer.train([batch])
        times.append(time.perf_counter() - start)
    result = {
        "tool": "tunix",
        "variant": args.variant,
        "first_step_s": times[0],
        "compile_s": None,
        "setup_s": setup_s,
        "step_s": times[1 + args.warmup :],
        "batch_shape": [2 * b, p + r],
        "parameters": sum(x.size for x in jax.tree.leaves(params)),
        "threads": os.cpu_count(),
        "train_steps_done": int(trainer.train_steps),
        "versions": {
            "google-tunix": metadata.version("google-tunix"),
            "jax": jax.__version__,
            "flax": metadata.version("flax"),
            "optax": metadata.version("optax"),
            "python": platform.python_version(),
        },
        "timed": "one trainer.train([batch]) call (one iteration of tunix's loop, synchronous)",
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
