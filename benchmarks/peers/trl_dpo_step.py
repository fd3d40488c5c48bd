"""TRL's ``DPOTrainer`` step on the benchmark's tiny Llama (torch, CPU): the TRL side of
``benchmarks/dpo_step.py``.

Run it with the TRL environment that ``benchmarks/peers/setup.sh`` creates (never jaxpref's)::

    ~/.cache/jaxpref-bench-peers/trl/bin/python benchmarks/peers/trl_dpo_step.py --variant default

Nothing is downloaded: the model is ``LlamaForCausalLM`` built from a ``LlamaConfig`` in code
(random init, float32, eager/SDPA attention as transformers picks on CPU), the reference model
is a frozen deep copy of it (``ref_model=``; TRL would otherwise reload the policy from its
hub name), the tokenizer is a ``tokenizers`` WordLevel model over ``w0 .. w{vocab-2}`` plus
``</s>`` built in code, and the data set is an in-memory ``datasets.Dataset`` of ``--pairs``
string triples whose tokenisation is exactly ``--prompt`` prompt tokens and ``--response``
response tokens (the last of which is the EOS that TRL appends).

What is timed: ``trainer.train()`` with ``max_steps = warmup + steps``, one batch of all the
pairs per step, and a ``TrainerCallback`` that stamps ``time.perf_counter()`` in
``on_step_end``. A step time is the interval between two consecutive ``on_step_end``
calls: everything TRL's training loop does for one optimizer update (collating the batch,
policy forward on chosen+rejected concatenated, reference forward under ``no_grad``, DPO
loss, backward, gradient clipping, AdamW, scheduler, callbacks). The first step is the
interval from ``on_train_begin`` to the first ``on_step_end`` (eager torch has no compile
step; this is its first-step cost). Trainer construction (tokenising the data set, and with
``--variant precomputed`` the reference pass over the data set) is reported separately as
``setup_s``.

Variants: ``default`` (reference model forward in every step), ``grad_ckpt``
(``gradient_checkpointing=True``), ``precomputed`` (``precompute_ref_log_probs=True``: the
reference log-probs are computed once before training and read from the data set).

Prints one line ``RESULT {json}`` for the driver.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _cli import peer_parser


def parse_args(argv=None):
    parser = peer_parser(__doc__.splitlines()[0], ["default", "grad_ckpt", "precomputed"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    return parser.parse_args(argv)


def make_tokenizer(vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab - 1)}
    words["</s>"] = vocab - 1
    core = Tokenizer(models.WordLevel(words, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", pad_token="</s>")
    tokenizer.padding_side = "left"
    return tokenizer


def make_dataset(args):
    """``pairs`` rows of strings that tokenise to exactly ``prompt`` + ``response`` tokens."""
    import numpy as np
    from datasets import Dataset

    rng = np.random.default_rng(args.seed)
    words = lambda n: " ".join(f"w{i}" for i in rng.integers(1, args.vocab - 1, n))
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for _ in range(args.pairs):
        rows["prompt"].append(words(args.prompt))
        # TRL concatenates prompt + completion strings and appends the EOS token.
        rows["chosen"].append(" " + words(args.response - 1))
        rows["rejected"].append(" " + words(args.response - 1))
    return Dataset.from_dict(rows)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import transformers
    import trl
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.d_model,
        intermediate_size=args.mlp,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=max(2048, args.prompt + args.response),
        tie_word_embeddings=False,
        eos_token_id=args.vocab - 1,
        pad_token_id=args.vocab - 1,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config).float()
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, *a, **k):
            stamps.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    total_steps = 1 + args.warmup + args.steps
    training_args = DPOConfig(
        output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), "jaxpref-bench-trl"),
        per_device_train_batch_size=args.pairs,
        gradient_accumulation_steps=1,
        max_steps=total_steps,
        learning_rate=1e-5,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        beta=0.1,
        max_length=args.prompt + args.response,
        gradient_checkpointing=args.variant == "grad_ckpt",
        precompute_ref_log_probs=args.variant == "precomputed",
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
    )
    setup_start = time.perf_counter()
    trainer = DPOTrainer(
        model=model,
        ref_model=None if args.variant == "precomputed" else reference,
        args=training_args,
        train_dataset=make_dataset(args),
        processing_class=make_tokenizer(args.vocab),
        callbacks=[Stamp()],
    )
    # The precomputed variant runs its reference pass when the train dataloader is built,
    # inside train() and before on_train_begin: it is not part of any step interval.
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(args.pairs)])
    shape = list(batch["input_ids"].shape)
    setup_s = time.perf_counter() - setup_start
    train_start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - train_start
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    first, timed = intervals[0], intervals[1 + args.warmup :]
    result = {
        "tool": "trl",
        "variant": args.variant,
        "first_step_s": first,
        "compile_s": None,
        "setup_s": setup_s,
        "train_call_s": train_s,
        "step_s": timed,
        "batch_shape": shape,
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "versions": {
            "torch": torch.__version__,
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
        "timed": "interval between consecutive on_step_end callbacks of trainer.train()",
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
