"""Observed vs idealized ranking accuracy of the quickstart model, before and after DPO.

Chen et al. (Preference Learning Algorithms Do Not Learn Preference Rankings, NeurIPS 2024,
arXiv:2405.19534) ask how often a model gives the preferred response of a pair the higher
likelihood, ``log π(y_w|x) > log π(y_l|x)`` with summed log-probs (the *ranking
accuracy*, :func:`jaxpref.metrics.ranking_accuracy`), and compare it with the accuracy of
the exact optimum of the KL-regularised objective that DPO minimises. That optimum is
``π*(y|x) ∝ π_ref(y|x) exp(r*(x, y)/β)``; under a Bradley-Terry ground truth with
``P(y_w ≻ y_l|x) = α`` it ranks a pair correctly iff (their Theorem 3.1; FORMULAS A16)

    log π_ref(y_w|x) - log π_ref(y_l|x) + (1/β) log(α / (1 - α)) > 0,

the *idealized ranking accuracy* (:func:`jaxpref.metrics.idealized_ranking_accuracy`). The
paper finds preference-tuned models far below it (gaps up to 59 points).

Here, on the quickstart task (:mod:`quickstart`, whose phases this script reuses): the
warm-up (SFT on a sloppy demonstrator) is the reference ``π_ref``; it draws ``num_samples``
completions of each held-out problem (problems never trained on) at the quickstart's
temperature, the judge grades them, and each problem gives its best sample over its worst
(:func:`jaxpref.tasks.judged.preference_pairs`; problems whose samples all tie give no
pair). The quickstart's DPO rounds then run on their own training prompts, and the summed
response log-probs of the warm-up and of the policy after each round are scored on these
fixed held-out pairs, with the engine's own :func:`jaxpref.train.objectives.response_logps`.

The ground-truth preference probability ``α``. The judge is deterministic: it gives each
answer a partial credit ``c`` in [0, 1] (the fraction of answer positions right). ``α`` is
a Bradley-Terry model on those credits with temperature ``τ`` (``alpha_temperature``)::

    α = σ((c_w - c_l) / τ),    so    log(α / (1 - α)) = (c_w - c_l) / τ.

With ``τ = 0.25`` and 2-digit addition (four answer positions, so credit gaps are multiples
of 1/4), one position more right gives ``α = σ(1) ≈ 0.73`` and a fully right answer over a
fully wrong one ``α = σ(4) ≈ 0.98``. Every pair has ``c_w > c_l``, so ``α > 1/2`` and the
idealized accuracy is never below the reference's own ranking accuracy. The headline uses
``alpha_temperature``; the report also shows the idealized accuracy over a range of ``τ``
(``alpha_temperatures``), since ``τ`` is a modelling choice and not a fact of the task.

``β`` is the DPO ``beta`` of the quickstart (1.0). The quickstart's rounds each take the
previous round's policy as the reference; with the same ground-truth reward, the optimum
of ``R`` such rounds is ``π_ref exp(R r*/β)``, so the idealized accuracy after round ``R`` is
the formula above with ``β / R`` (round 1: exactly ``β``).

What it shows (default config, seed 0): the warm-up ranks only about a quarter of the pairs
right (it gives its own no-carry mistakes more likelihood than the right answers), and DPO
raises that to about 99%, above the idealized accuracy at ``τ = 0.25`` (79% after one round,
95% after two): a negative gap, the opposite of the paper's LLM finding. DPO's training
labels here are deterministic (the judge always prefers the higher credit), so it keeps
widening the margins past the finite log-odds ``(c_w - c_l)/τ`` of the ground truth, and
the tiny model moves its likelihoods easily; the gap is positive only for ``τ`` of about 0.1 or less
(see the sweep).

``results.json``: ``observed`` (ranking accuracy of the final policy), ``idealized`` (after
as many rounds), ``gap = idealized - observed``, ``observed_reference`` (the warm-up's),
``per_phase`` (both accuracies after each phase), ``idealized_by_tau``, the held-out judge
scores before and after, and pair counts. ``pair_logps.npz`` holds the pairs' credits and
every phase's summed log-probs ``[pairs, 2]`` (chosen, rejected), so the accuracies can be
recomputed; per phase, ``sft/`` and ``preference_round*/`` hold the engine's metrics,
TensorBoard events and checkpoints.

Run: ``python experiments/ranking_accuracy.py --workdir runs/ranking_accuracy`` (``--small``
for the test-suite size; ``--set alpha_temperature=0.5``, ``--set base.rounds=1``,
``--set base.objective_options.beta=0.5``, ...). A run replaces the phase directories of an
earlier run in the same workdir.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxpref import losses, metrics
from jaxpref.data import collate
from jaxpref.tasks import arithmetic, judged
from jaxpref.train import Objective
from jaxpref.train.experiment import main, markdown_table, save_plot, write_report
from jaxpref.train.objectives import response_logps

_HERE = str(pathlib.Path(__file__).resolve().parent)
if _HERE not in sys.path:  # loaded by path (the tests) rather than run as a script
    sys.path.append(_HERE)
import quickstart  # noqa: E402

log = logging.getLogger("ranking_accuracy")


@dataclasses.dataclass(frozen=True)
class Config:
    """The ranking-accuracy experiment.

    Attributes:
      base: the quickstart recipe (model, warm-up, sampling, DPO rounds, held-out split);
        its ``num_samples`` and ``temperature`` also draw the held-out pairs.
      alpha_temperature: ``τ`` of the ground truth ``α = σ((c_w - c_l) / τ)``.
      alpha_temperatures: the ``τ`` values of the sensitivity sweep in the report.
    """

    base: quickstart.Config = dataclasses.field(default_factory=quickstart.Config)
    alpha_temperature: float = 0.25
    alpha_temperatures: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)

    def __post_init__(self) -> None:
        if isinstance(self.base, Mapping):  # --set base={...} gives a dict
            object.__setattr__(self, "base", quickstart.Config(**self.base))
        object.__setattr__(self, "alpha_temperatures", tuple(self.alpha_temperatures))
        if self.base.objective != "dpo":
            raise ValueError(
                "the idealized ranking accuracy is that of the optimum of the DPO/RLHF "
                f"objective; base.objective must be 'dpo', got {self.base.objective!r}"
            )
        if min(self.alpha_temperature, *self.alpha_temperatures) <= 0:
            raise ValueError("alpha temperatures must be positive")

    @classmethod
    def small(cls) -> Config:
        """The test-suite size: the quickstart's small config (one round)."""
        return cls(base=quickstart.Config.small())

    @property
    def beta(self) -> float:
        """The DPO ``beta`` of the preference rounds (the objective's default if unset)."""
        default = inspect.signature(losses.dpo).parameters["beta"].default
        return float(self.base.objective_options.get("beta", default))


def alpha(credit: np.ndarray, temperature: float) -> np.ndarray:
    """Ground-truth ``P(y_w ≻ y_l)`` of pairs with credits ``[..., 2]``: Bradley-Terry on the
    credit gap at ``temperature``.

    >>> alpha(np.array([[1.0, 0.0], [0.5, 0.5]]), 0.25).round(3).tolist()
    [0.982, 0.5]
    """
    return 1.0 / (1.0 + np.exp(-(credit[..., 0] - credit[..., 1]) / temperature))


def pair_logps(model: Any, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """Summed response log-probs ``[pairs, 2]`` (chosen, rejected) of one collated batch."""
    logps, _ = response_logps(model, batch, average=False)
    return np.asarray(logps, np.float64)


def run(config: Config, workdir: pathlib.Path) -> dict[str, Any]:
    """Warm-up, held-out pairs from it, DPO rounds; both accuracies after every phase."""
    qs = config.base
    Objective(qs.objective, qs.objective_options).validate()  # before the warm-up
    quickstart.start_afresh(workdir, "sft", "preference_round*")
    task = qs.task
    sft_problems, pool, held_out = quickstart.split_problems(qs, qs.rounds * qs.prompts_per_round)
    policy, sft_seconds = quickstart.warm_up(qs, workdir, sft_problems)
    seconds = {"sft": round(sft_seconds, 1)}

    key = jax.random.key(qs.seed)
    # Round 0's key (the quickstart's rounds use 1, 2, ...): the held-out pairs.
    samples = quickstart.sample_round(
        qs, policy, held_out, jax.random.fold_in(key, 0), "sampling held-out pairs"
    )
    pairs, pair_stats = judged.preference_pairs(task, samples)
    if not pairs:
        raise RuntimeError("every held-out problem's samples tie: no pairs to rank")
    log.info("held-out pairs: %s", pair_stats)
    batch = collate(
        [[(i, example)] for i, example in enumerate(pairs)],
        kind="pairwise",
        length=task.max_length,
        num_items=2,
        pad_id=arithmetic.PAD,
    )
    credit = np.array([example.features["scores"] for example in pairs], np.float64)
    logps = {"sft": pair_logps(policy, batch)}
    scores = {"sft": judged.evaluate(policy, task, held_out, batch_size=qs.sample_batch_size)}

    for r in range(1, qs.rounds + 1):
        prompts = pool[(r - 1) * qs.prompts_per_round : r * qs.prompts_per_round]
        round_samples = quickstart.sample_round(
            qs, policy, prompts, jax.random.fold_in(key, r), f"sampling round {r}"
        )
        examples, stats = judged.preference_pairs(task, round_samples)
        log.info("round %d: %s", r, stats)
        if not examples:
            raise RuntimeError(f"round {r}: every prompt's samples tie; nothing to learn from")
        policy, round_seconds = quickstart.optimise(
            qs, policy, examples, workdir / f"preference_round{r}"
        )
        seconds[f"round{r}"] = round(round_seconds, 1)
        logps[f"round {r}"] = pair_logps(policy, batch)
        scores[f"round {r}"] = judged.evaluate(
            policy, task, held_out, batch_size=qs.sample_batch_size
        )

    reference = logps["sft"]
    alphas = alpha(credit, config.alpha_temperature)

    def observed(phase: str) -> float:
        lp = logps[phase]
        return float(metrics.ranking_accuracy(lp[:, 0], lp[:, 1]))

    def idealized(rounds: int, a: np.ndarray = alphas) -> float:
        beta = config.beta / rounds  # R rounds of DPO, each from the previous optimum
        return float(
            metrics.idealized_ranking_accuracy(reference[:, 0], reference[:, 1], a, beta=beta)
        )

    per_phase = []
    for r, phase in enumerate(logps):
        row = {
            "phase": phase,
            "observed": round(observed(phase), 4),
            "idealized": round(idealized(r), 4) if r else None,
            "judge_score": round(scores[phase].score, 2),
            "mean_logp_chosen": round(float(logps[phase][:, 0].mean()), 3),
            "mean_logp_rejected": round(float(logps[phase][:, 1].mean()), 3),
        }
        if r:
            row["gap"] = round(row["idealized"] - row["observed"], 4)
        per_phase.append(row)
    final = per_phase[-1]
    by_tau = [
        {"tau": tau, "idealized": round(idealized(qs.rounds, alpha(credit, tau)), 4)}
        for tau in config.alpha_temperatures
    ]
    misranked = reference[:, 0] <= reference[:, 1]
    final_lp = logps[final["phase"]]
    results = {
        "observed": final["observed"],
        "idealized": final["idealized"],
        "gap": round(final["idealized"] - final["observed"], 4),
        "observed_reference": per_phase[0]["observed"],
        "beta": config.beta,
        "alpha_temperature": config.alpha_temperature,
        "rounds": qs.rounds,
        "num_pairs": len(pairs),
        "pair_stats": dataclasses.asdict(pair_stats),
        "mean_alpha": round(float(alphas.mean()), 4),
        "reference_misranked": int(misranked.sum()),
        "misranked_fixed": int((misranked & (final_lp[:, 0] > final_lp[:, 1])).sum()),
        "judge_score_before": per_phase[0]["judge_score"],
        "judge_score_after": final["judge_score"],
        "per_phase": per_phase,
        "idealized_by_tau": by_tau,
        "train_seconds": seconds,
    }
    np.savez(
        workdir / "pair_logps.npz",
        credit=credit,
        **{f"logps_{phase.replace(' ', '')}": lp for phase, lp in logps.items()},
    )
    plots = [
        plot_accuracies(workdir, per_phase),
        plot_tau_sweep(workdir, results),
        plot_pairs(workdir, reference, final_lp, credit, final["phase"]),
    ]
    write_report(
        workdir,
        title="Observed vs idealized ranking accuracy (Chen et al. 2024) on the quickstart task",
        results=results,
        body=summary_body(config, results),
        plots=plots,
    )
    return results


def plot_accuracies(workdir: pathlib.Path, per_phase: list[dict[str, Any]]) -> str:
    """Observed ranking accuracy per phase next to the idealized one of the same rounds."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(1.8 + 1.5 * len(per_phase), 3.4))
    x = np.arange(len(per_phase))
    observed = [100 * p["observed"] for p in per_phase]
    idealized = [np.nan if p["idealized"] is None else 100 * p["idealized"] for p in per_phase]
    for offset, values, label in ((-0.2, observed, "observed"), (0.2, idealized, "idealized")):
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, [p["phase"] for p in per_phase])
    ax.set(ylabel="ranking accuracy, %", ylim=(0, 119), title="held-out judged pairs")
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    return save_plot(figure, workdir, "ranking_accuracy").stem


def plot_tau_sweep(workdir: pathlib.Path, results: Mapping[str, Any]) -> str:
    """Idealized accuracy against the ground truth's temperature, observed ones as lines."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.2, 3.4))
    taus = [row["tau"] for row in results["idealized_by_tau"]]
    ax.plot(taus, [100 * row["idealized"] for row in results["idealized_by_tau"]], "o-")
    ax.axvline(results["alpha_temperature"], color="grey", lw=0.6, ls=":")
    ax.axhline(100 * results["observed"], color="C1", ls="--", label="observed, tuned")
    ax.axhline(100 * results["observed_reference"], color="C2", ls="--", label="observed, ref")
    ax.set_xscale("log")
    ax.set(
        xlabel="τ of α = σ((c_w - c_l)/τ)",
        ylabel="ranking accuracy, %",
        title=f"idealized accuracy, β/R = {results['beta'] / results['rounds']:g}",
    )
    ax.legend(fontsize=8)
    return save_plot(figure, workdir, "idealized_vs_tau").stem


def plot_pairs(
    workdir: pathlib.Path,
    reference: np.ndarray,
    tuned: np.ndarray,
    credit: np.ndarray,
    phase: str,
) -> str:
    """Each pair's log-likelihood margin under the reference (x) and the tuned policy (y)."""
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.0, 4.2))
    points = ax.scatter(
        reference[:, 0] - reference[:, 1],
        tuned[:, 0] - tuned[:, 1],
        c=credit[:, 0] - credit[:, 1],
        s=6,
        cmap="viridis",
        alpha=0.7,
    )
    figure.colorbar(points, ax=ax, label="credit gap c_w - c_l")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set(
        xlabel="reference: log π(y_w) - log π(y_l)",
        ylabel=f"after {phase}: log π(y_w) - log π(y_l)",
        title="pairs right of / above 0 are ranked right",
    )
    return save_plot(figure, workdir, "pair_margins").stem


def summary_body(config: Config, results: Mapping[str, Any]) -> str:
    stats = results["pair_stats"]
    return "\n\n".join(
        [
            f"On **{results['num_pairs']}** held-out pairs (best vs worst of "
            f"{config.base.num_samples} samples of the warm-up model for each of "
            f"{stats['prompts']} held-out problems; {stats['ties']} problems had all samples "
            f"tied), the ranking accuracy after {results['rounds']} round(s) of DPO "
            f"(β = {results['beta']:g}) is **{100 * results['observed']:.1f}%**, against an "
            f"idealized **{100 * results['idealized']:.1f}%** for the exact optimum of the "
            f"same objective: a gap of **{100 * results['gap']:+.1f} points**. The warm-up "
            f"(reference) model ranks {100 * results['observed_reference']:.1f}% of the pairs "
            "right.",
            "Ground truth: α = σ((c_w − c_l)/τ) on the judge's partial credits, "
            f"τ = {results['alpha_temperature']:g} (mean α {results['mean_alpha']:.3f}). "
            "Idealized accuracy after R rounds: the fraction of pairs with "
            "log π_ref(y_w) − log π_ref(y_l) + (R/β) log(α/(1−α)) > 0 (Chen et al. 2024, "
            "Thm. 3.1). Judge score: percent of held-out problems answered exactly right "
            "(greedy).",
            markdown_table(
                [
                    {k: "—" if v is None else v for k, v in row.items()}
                    for row in results["per_phase"]
                ],
                [
                    "phase",
                    "observed",
                    "idealized",
                    "gap",
                    "judge_score",
                    "mean_logp_chosen",
                    "mean_logp_rejected",
                ],
            ),
            f"Of the {results['reference_misranked']} pairs the reference ranks wrong, the "
            f"tuned policy ranks {results['misranked_fixed']} right. "
            + (
                "The gap is negative: DPO ranks more pairs right than the exact optimum "
                "under this α would. Its training labels are deterministic (the judge always "
                "prefers the higher credit), and DPO on such pairs keeps widening the margins "
                "past the finite log-odds (c_w − c_l)/τ of the ground truth."
                if results["gap"] < 0
                else "The gap is positive, as Chen et al. find for preference-tuned LLMs: "
                "the tuned policy ranks fewer pairs right than the optimum would."
            ),
            "Idealized accuracy for other temperatures of the ground truth:",
            markdown_table(results["idealized_by_tau"]),
            f"Training seconds per phase: {results['train_seconds']}.",
        ]
    )


if __name__ == "__main__":
    main(Config(), run, description=__doc__.splitlines()[0])
