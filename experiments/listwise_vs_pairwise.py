"""Listwise vs pairwise preference optimisation on K judged samples per prompt.

The quickstart task (:mod:`quickstart`, whose phases this script reuses): one supervised
warm-up on the sloppy demonstrator, then ``num_samples = K`` completions of each of
``prompts_per_round`` training prompts from the warmed-up policy, graded by the judge's
partial credit. From that ONE set of judged samples, each arm trains a copy of the same
warmed-up policy (also its frozen reference) for the same number of steps, batch size and
learning rate, and is scored by greedy decoding on the same held-out problems:

* ``dpo_best_vs_worst``: DPO (Rafailov et al. 2023, arXiv:2305.18290) on each prompt's best
  sample over its worst (:func:`jaxpref.tasks.judged.preference_pairs`);
* ``dpo_all_pairs``: DPO on every ordered pair of a prompt's samples with different credit
  (:func:`all_pairs`: up to ``K (K - 1) / 2`` pairs per prompt);
* ``plackett_luce``: the Plackett-Luce list likelihood of the credit order (the DPO paper's
  Appendix A.3; FORMULAS B1), on scores ``β (log π - log π_ref)``;
* ``lipo_lambda``: LiPO-λ (Liu et al., LiPO: Listwise Preference Optimization through
  Learning-to-Rank, 2024, arXiv:2402.01878; FORMULAS B3): pairwise logistic terms with
  LambdaRank weights, same scores and labels;
* ``pro``: Preference Ranking Optimization (Song et al., AAAI 2024, arXiv:2306.17492;
  FORMULAS B4): best-vs-rest softmaxes of the length-averaged policy log-probs with
  credit-gap temperatures plus an NLL term on the best sample; no reference model.

The listwise arms get all ``K`` samples of a prompt with their credits as labels
(:func:`jaxpref.tasks.judged.ranked_lists`). Prompts whose samples all tie are skipped by
every arm. Samples with equal credit are tied; Plackett-Luce orders ties by sample index
(i.i.d. samples, so an arbitrary order), LiPO-λ and PRO give tied pairs no term. The DPO and
listwise arms use the quickstart's ``β = 1``; PRO has no ``β`` (the official
``sft_weight = 0.05`` is its default).

A batch holds ``batch_size`` examples: pairs for the DPO arms, whole lists of ``K`` for the
listwise ones, so a listwise step runs ``K / 2`` times the sequences of a pairwise step;
``train_seconds`` shows what that costs.

What it shows (default config, seed 0; one run, so differences of a few points are within
seed noise): from a warm-up at about 40, every arm improves; PRO ends highest (96), then
Plackett-Luce (79), DPO best-vs-worst (66), LiPO-λ (63) and DPO on all pairs (59). PRO's
lead comes with its NLL term on each prompt's best sample (weight ``0.05 (K - 1)^2``, about
2.5 for ``K = 8``): part of it is supervised learning on the judge's best answers, so this
compares recipes, not ranking losses alone (``--set arms.pro.options={'sft_weight':0.0}``
removes the term). The listwise arms cost about three times the DPO arms' seconds.

``results.json``: ``judge_score`` ({arm: held-out percent exactly right after training}),
``judge_score_before`` (the warm-up's), ``credit`` ({arm: mean partial credit, 0-100}),
``train_seconds`` ({arm: seconds}, plus ``sft``), ``examples`` (training examples per arm),
``best``. Every arm's ``metrics.jsonl``, TensorBoard events and checkpoint are in its
directory under ``arms/``; the warm-up's in ``sft/``.

Run: ``python experiments/listwise_vs_pairwise.py --workdir runs/listwise_vs_pairwise``
(``--small`` for the test-suite size; ``--set base.num_samples=4``, ``--set
base.preference.num_steps=300``, ``--set arms.pro.options={'sft_weight':0.5}``, ...). A run
replaces the phase directories of an earlier run in the same workdir.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxpref import losses
from jaxpref.data.tokenize import TokenizedExample
from jaxpref.tasks import judged
from jaxpref.train import Objective, read_metrics
from jaxpref.train.experiment import main, markdown_table, save_plot, write_report

_HERE = str(pathlib.Path(__file__).resolve().parent)
if _HERE not in sys.path:  # loaded by path (the tests) rather than run as a script
    sys.path.append(_HERE)
import quickstart  # noqa: E402

log = logging.getLogger("listwise_vs_pairwise")

#: How an arm's examples are made from the judged samples.
DATA = ("best_vs_worst", "all_pairs", "lists")


def default_arms() -> dict[str, dict[str, Any]]:
    """The compared arms: label -> objective, its options and the data it trains on."""
    beta = {"beta": 1.0}
    return {
        "dpo_best_vs_worst": {"objective": "dpo", "options": beta, "data": "best_vs_worst"},
        "dpo_all_pairs": {"objective": "dpo", "options": beta, "data": "all_pairs"},
        "plackett_luce": {"objective": "plackett_luce", "options": beta, "data": "lists"},
        "lipo_lambda": {"objective": "lipo_lambda", "options": beta, "data": "lists"},
        "pro": {"objective": "pro", "options": {}, "data": "lists"},
    }


@dataclasses.dataclass(frozen=True)
class Config:
    """The listwise-vs-pairwise comparison.

    Attributes:
      base: the quickstart recipe: model, warm-up, held-out split, ``prompts_per_round``
        prompts with ``num_samples`` samples each at ``temperature`` (one round), and the
        ``preference`` optimisation every arm runs. Its ``objective`` and
        ``objective_options`` are replaced by the arms'; ``rounds`` must be 1.
      arms: label -> ``{"objective": name, "options": {...}, "data": one of DATA}``.
    """

    base: quickstart.Config = dataclasses.field(default_factory=lambda: quickstart.Config(rounds=1))
    arms: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=default_arms)

    def __post_init__(self) -> None:
        if isinstance(self.base, Mapping):  # --set base={...} gives a dict
            object.__setattr__(self, "base", quickstart.Config(**self.base))
        object.__setattr__(self, "arms", {k: dict(v) for k, v in self.arms.items()})
        if self.base.rounds != 1:
            raise ValueError(
                f"every arm trains on one set of samples: base.rounds must be 1, got "
                f"{self.base.rounds}"
            )
        if not self.arms:
            raise ValueError("no arms to compare")
        for label, arm in self.arms.items():
            unknown = sorted(set(arm) - {"objective", "options", "data"})
            if unknown or arm.get("data") not in DATA or "objective" not in arm:
                raise ValueError(
                    f"arm {label!r} must be {{'objective': name, 'options': {{...}}, 'data': "
                    f"one of {DATA}}}, got {arm}"
                )
            family = losses.spec(arm["objective"]).family
            wanted = "listwise" if arm["data"] == "lists" else "pairwise"
            if family != wanted:
                raise ValueError(
                    f"arm {label!r}: {arm['objective']!r} is {family}, but data "
                    f"{arm['data']!r} needs a {wanted} objective"
                )

    @classmethod
    def small(cls) -> Config:
        """The test-suite size: a shorter warm-up, fewer prompts, samples and steps."""
        return cls(
            base=quickstart.Config(
                num_eval=500,
                sft=quickstart.Phase(
                    num_steps=1000, batch_size=64, learning_rate=1e-3, warmup_steps=20
                ),
                rounds=1,
                prompts_per_round=512,
                num_samples=6,
                preference=quickstart.Phase(
                    num_steps=60, batch_size=32, learning_rate=1e-4, warmup_steps=10
                ),
            )
        )


def all_pairs(
    task: judged.Task, samples: judged.Samples, *, min_gap: float = 1e-6
) -> tuple[list[TokenizedExample], judged.PairStats]:
    """Every ordered pair of a prompt's samples whose credits differ by ``min_gap`` or more.

    The higher-credit sample is chosen. A prompt gives up to ``K (K - 1) / 2`` pairs; one
    whose samples all tie gives none (counted in the stats, whose ``examples`` counts
    prompts that gave pairs).
    """
    credit = samples.judgement.credit
    prompts = task.prompts(samples.problems)
    examples = []
    for i in range(len(credit)):
        responses = [samples.tokens[i, k][samples.mask[i, k]] for k in range(credit.shape[1])]
        for a, b in zip(
            *np.nonzero(credit[i][:, None] - credit[i][None, :] >= min_gap), strict=True
        ):
            examples.append(
                judged.tokenized_example(
                    "pairwise",
                    prompts[i],
                    [responses[a], responses[b]],
                    strength=None,
                    margin=None,
                    scores=(float(credit[i, a]), float(credit[i, b])),
                )
            )
    _, stats = judged.preference_pairs(task, samples, min_gap=min_gap)  # the same ties
    return examples, stats


BUILDERS = {
    "best_vs_worst": judged.preference_pairs,
    "all_pairs": all_pairs,
    "lists": judged.ranked_lists,
}


def run(config: Config, workdir: pathlib.Path) -> dict[str, Any]:
    """One warm-up, one set of judged samples, every arm trained from the warm-up on it."""
    for arm in config.arms.values():  # before the warm-up
        Objective(arm["objective"], arm.get("options", {})).validate()
    qs = config.base
    task = qs.task
    quickstart.start_afresh(workdir, "sft", "arms")
    sft_problems, prompts, held_out = quickstart.split_problems(qs, qs.prompts_per_round)
    warm, sft_seconds = quickstart.warm_up(qs, workdir, sft_problems)
    seconds = {"sft": round(sft_seconds, 1)}
    before = judged.evaluate(warm, task, held_out, batch_size=qs.sample_batch_size)
    log.info("held-out after the warm-up: score %.1f", before.score)

    samples = quickstart.sample_round(
        qs, warm, prompts, jax.random.fold_in(jax.random.key(qs.seed), 1), "sampling"
    )
    needed = {arm["data"] for arm in config.arms.values()}
    data = {name: BUILDERS[name](task, samples) for name in DATA if name in needed}
    stats = next(iter(data.values()))[1]  # the same for every builder
    log.info("judged samples: %s", stats)
    if not stats.examples:
        raise RuntimeError("every prompt's samples tie; nothing to learn from")

    rows = []
    for label, arm in config.arms.items():
        examples, _ = data[arm["data"]]
        log.info("arm %s: %s on %d examples", label, arm["objective"], len(examples))
        policy, arm_seconds = quickstart.optimise(
            qs,
            quickstart.copy_model(warm),  # train() donates the parameters it is given
            examples,
            workdir / "arms" / label,
            objective=arm["objective"],
            options=arm.get("options", {}),
        )
        out = judged.evaluate(policy, task, held_out, batch_size=qs.sample_batch_size)
        log.info("held-out after %s: score %.1f", label, out.score)
        seconds[label] = round(arm_seconds, 1)
        rows.append(
            {
                "arm": label,
                "objective": arm["objective"],
                "data": arm["data"],
                "examples": len(examples),
                "judge_score": round(out.score, 2),
                "credit": round(out.credit, 2),
                "train_seconds": seconds[label],
            }
        )

    scores = {row["arm"]: row["judge_score"] for row in rows}
    results = {
        "judge_score": scores,
        "judge_score_before": round(before.score, 2),
        "credit": {row["arm"]: row["credit"] for row in rows},
        "credit_before": round(before.credit, 2),
        "improvement": {k: round(v - before.score, 2) for k, v in scores.items()},
        "best": max(scores, key=scores.get),
        "examples": {row["arm"]: row["examples"] for row in rows},
        "samples": dataclasses.asdict(stats),
        "num_samples": qs.num_samples,
        "num_eval": len(held_out),
        "train_seconds": seconds,
        "arms": rows,
    }
    plots = [plot_scores(workdir, results), plot_curves(workdir, list(config.arms))]
    write_report(
        workdir,
        title=f"Listwise vs pairwise on {qs.num_samples} judged samples per prompt",
        results=results,
        body=summary_body(config, results),
        plots=plots,
    )
    return results


def plot_scores(workdir: pathlib.Path, results: Mapping[str, Any]) -> str:
    """Held-out judge score per arm, the warm-up's as a dashed line."""
    import matplotlib.pyplot as plt

    labels = list(results["judge_score"])
    figure, ax = plt.subplots(figsize=(1.6 + 1.3 * len(labels), 3.6))
    bars = ax.bar(np.arange(len(labels)), [results["judge_score"][k] for k in labels])
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.axhline(results["judge_score_before"], color="grey", ls="--", label="warm-up")
    ax.set_xticks(np.arange(len(labels)), labels, rotation=20, ha="right")
    ax.set(ylabel="held-out judge score", ylim=(0, 110), title="after one round, same data")
    ax.legend(loc="upper left", fontsize=8)
    return save_plot(figure, workdir, "scores").stem


def plot_curves(workdir: pathlib.Path, labels: list[str]) -> str:
    """Each arm's training loss and its accuracy metric (pairs, or top-1 for lists)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for label in labels:
        curve = read_metrics(workdir / "arms" / label)
        steps = [m["step"] for m in curve]
        axes[0].plot(steps, [m["loss"] for m in curve], lw=0.8, label=label)
        axes[1].plot(steps, [m.get("accuracy", np.nan) for m in curve], lw=0.8, label=label)
    axes[0].set(title="training loss (each objective's own scale)", xlabel="step")
    axes[1].set(
        title="training accuracy (pairs: chosen ranked first; lists: best on top)",
        xlabel="step",
    )
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    return save_plot(figure, workdir, "training_curves").stem


def summary_body(config: Config, results: Mapping[str, Any]) -> str:
    qs = config.base
    s = results["samples"]
    best = results["best"]
    return "\n\n".join(
        [
            f"Held-out judge score (percent of {results['num_eval']} held-out problems answered "
            f"exactly right, greedy) after the warm-up: **{results['judge_score_before']:.1f}**. "
            f"Best arm: **{best}, {results['judge_score'][best]:.1f}**. Every arm trained a "
            f"copy of that warm-up for {qs.preference.num_steps} steps of "
            f"{qs.preference.batch_size} examples (lr {qs.preference.learning_rate:g}) on the "
            f"same {qs.num_samples} samples of each of {s['prompts']} prompts "
            f"({s['ties']} prompts all tied and were skipped; "
            f"{100 * s['fraction_correct']:.1f}% of samples exactly right).",
            markdown_table(
                results["arms"],
                ["arm", "objective", "data", "examples", "judge_score", "credit", "train_seconds"],
            ),
            "Arms: `dpo_best_vs_worst` (one pair per prompt), `dpo_all_pairs` (every pair "
            "with different credit), and the listwise objectives on all samples of a prompt "
            "with their credits as labels. Credit: mean partial credit per answer position, "
            f"0-100 (warm-up {results['credit_before']:.1f}). A listwise example is "
            f"{qs.num_samples} sequences, a pair 2: train seconds are per arm.",
            f"Training seconds: {results['train_seconds']}.",
        ]
    )


if __name__ == "__main__":
    main(Config(), run, description=__doc__.splitlines()[0])
