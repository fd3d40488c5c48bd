"""``python -m jaxpref.train --workdir DIR [--set key=value ...]``: the engine on a tiny model.

Trains ``TransformerConfig.tiny()`` on the synthetic preference task of
:mod:`jaxpref.train.synthetic` with any offline objective. Re-running the same command with
the same workdir resumes from the latest checkpoint. A small, honest end-to-end run of the
engine; the experiments in ``experiments/`` are the real recipes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np
from flax import nnx

from jaxpref import models
from jaxpref.train.config import TrainConfig, apply_overrides
from jaxpref.train.loop import train
from jaxpref.train.mesh import maybe_initialize_distributed
from jaxpref.train.synthetic import synthetic_pairs


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(
            num_steps=40, batch_size=8, learning_rate=3e-3, checkpoint_every=10, max_length=16
        )
    )
    num_examples: int = 256
    vocab_size: int = 32
    model_seed: int = 0
    poison_step: int = -1  # tests: make the batch of this step non-finite (NaN guard)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    maybe_initialize_distributed()  # multi-host launches only; a no-op on one machine
    config = apply_overrides(DemoConfig(), args.overrides)
    model = models.Transformer(
        models.TransformerConfig.tiny(vocab_size=config.vocab_size),
        rngs=nnx.Rngs(config.model_seed),
    )
    examples = synthetic_pairs(config.num_examples, vocab_size=config.vocab_size)
    result = train(
        config.train,
        args.workdir,
        model=model,
        examples=examples,
        progress=not args.no_progress,
        batch_transform=_poisoner(config.poison_step) if config.poison_step >= 0 else None,
    )
    json.dump(result.summary, sys.stdout, indent=2)
    print()
    return 0


def _poisoner(step_to_poison: int):
    """Fault injection: the batch of step ``step_to_poison`` (0-based) gets NaN reference
    log-probs, so its loss is NaN and the NaN guard must stop the run."""

    def transform(step: int, batch: dict) -> dict:
        if step != step_to_poison:
            return batch
        shape = batch["input_ids"].shape[:-1]
        return {**batch, "reference_logps": np.full(shape, np.nan, np.float32)}

    return transform


if __name__ == "__main__":
    raise SystemExit(main())
