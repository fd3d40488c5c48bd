"""Pairwise objectives on a tabular bandit with a known Bradley-Terry reward.

A softmax policy over K actions starts at a reference policy. Preference pairs are sampled
from the reference and labelled by a Bradley-Terry oracle with a known reward ``r``. Each
pairwise objective from the registry is trained on the same pairs; the report shows how far
each moves the expected true reward, its KL from the reference, and how well its implicit
reward ``β log π/π_ref`` recovers ``r`` (DPO's optimum on full support satisfies
``β log π/π_ref = r + const``).

Run: ``python experiments/tabular_dpo.py --workdir runs/tabular_dpo [--small]`` (a few
seconds on CPU), with overrides such as ``--set beta=0.1``, ``--set steps=1000`` or
``--set "objectives=('dpo', 'ipo')"``. ``results.json`` has ``reference_expected_reward``,
``best_action_reward`` and, per objective, ``expected_reward``, ``kl_from_reference``,
``implicit_reward_correlation``, ``ranking_accuracy`` and ``final_loss``; ``metrics.jsonl``
and TensorBoard have each objective's training loss per step (``{objective}/loss``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpref import losses, metrics
from jaxpref.train import experiment


@dataclasses.dataclass(frozen=True)
class Config:
    """The bandit, the data and the optimisation shared by every objective.

    Attributes:
      num_actions: K, the number of actions.
      num_pairs: preference pairs sampled from the reference.
      beta: the objectives' ``beta`` (KL strength / inverse margin).
      steps: full-batch Adam steps per objective.
      learning_rate: Adam learning rate on the logits.
      seed: reference, reward, pairs and labels.
      objectives: registered pairwise objectives to train.
      objective_options: extra keyword options per objective (``beta`` comes from ``beta``).
    """

    num_actions: int = 8
    num_pairs: int = 4096
    beta: float = 0.5
    steps: int = 400
    learning_rate: float = 0.05
    seed: int = 0
    objectives: tuple[str, ...] = ("dpo", "ipo", "robust_dpo", "hinge", "soft_preference")
    objective_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=lambda: {"robust_dpo": {"label_smoothing": 0.1}}
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(
            self, "objective_options", {k: dict(v) for k, v in self.objective_options.items()}
        )
        for name in self.objectives:
            if losses.spec(name).family != "pairwise":  # KeyError for an unknown name
                raise ValueError(f"{name!r} is not a pairwise objective")

    @classmethod
    def small(cls) -> Config:
        """The test-suite size: fewer pairs and steps."""
        return cls(num_pairs=2048, steps=300)


def make_problem(config: Config):
    key = jax.random.key(config.seed)
    k_ref, k_reward, k_pairs, k_labels = jax.random.split(key, 4)
    ref_logits = 0.5 * jax.random.normal(k_ref, (config.num_actions,))
    reward = jax.random.normal(k_reward, (config.num_actions,))
    pairs = jax.random.categorical(k_pairs, ref_logits, shape=(config.num_pairs, 2))
    p_first = jax.nn.sigmoid(reward[pairs[:, 0]] - reward[pairs[:, 1]])
    first_wins = jax.random.uniform(k_labels, (config.num_pairs,)) < p_first
    chosen = jnp.where(first_wins, pairs[:, 0], pairs[:, 1])
    rejected = jnp.where(first_wins, pairs[:, 1], pairs[:, 0])
    return ref_logits, reward, chosen, rejected, p_first


def train(
    config: Config, objective: str, problem
) -> tuple[dict[str, float], jax.Array, np.ndarray]:
    """Trains the logits with ``objective``.

    Returns its metrics, the final log-ratio and the loss before each step ``[steps]``.
    """
    ref_logits, reward, chosen, rejected, _ = problem
    loss_fn = losses.get(objective)
    ref_logp = jax.nn.log_softmax(ref_logits)
    distinct = chosen != rejected  # identical pairs carry no preference: masked, not dropped
    if objective == "soft_preference":
        # Its extra input: the oracle's probability that the labelled-chosen action wins.
        extra_args = (jax.nn.sigmoid(reward[chosen] - reward[rejected]),)
    else:
        extra_args = ()
    options = {"beta": config.beta, **config.objective_options.get(objective, {})}

    def loss(logits):
        logp = jax.nn.log_softmax(logits)
        return loss_fn(
            logp[chosen],
            logp[rejected],
            ref_logp[chosen],
            ref_logp[rejected],
            *extra_args,
            where=distinct,
            **options,
        )

    optimizer = optax.adam(config.learning_rate)

    @jax.jit
    def step(logits, opt_state):
        value, grad = jax.value_and_grad(loss)(logits)
        updates, opt_state = optimizer.update(grad, opt_state)
        return optax.apply_updates(logits, updates), opt_state, value

    logits, opt_state = ref_logits, optimizer.init(ref_logits)
    curve = []
    for _ in range(config.steps):
        logits, opt_state, value = step(logits, opt_state)
        curve.append(value)
    policy = jax.nn.softmax(logits)
    logp = jax.nn.log_softmax(logits)
    log_ratio = logp - ref_logp
    implicit = config.beta * log_ratio
    result = {
        "final_loss": float(value),
        "expected_reward": float(policy @ reward),
        "kl_from_reference": float(policy @ log_ratio),
        "implicit_reward_correlation": float(jnp.corrcoef(implicit, reward)[0, 1]),
        "ranking_accuracy": float(
            metrics.ranking_accuracy(logp[chosen], logp[rejected], where=distinct)
        ),
    }
    return result, log_ratio, np.asarray(jax.device_get(curve), np.float64)


def plot(config: Config, reward, log_ratios: Mapping[str, jax.Array], results, workdir) -> list:
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    r = np.asarray(reward)
    for name in names:
        implicit = config.beta * np.asarray(log_ratios[name])
        # Implicit rewards are defined up to a constant: centre both for the comparison.
        axes[0].plot(r - r.mean(), implicit - implicit.mean(), "o", label=name, alpha=0.8)
    axes[0].axline((0, 0), slope=1, color="grey", lw=0.8, ls="--")
    axes[0].set_xlabel("true reward r (centred)")
    axes[0].set_ylabel("β log π/π_ref (centred)")
    axes[0].legend(fontsize=8)
    x = np.arange(len(names))
    axes[1].bar(x - 0.2, [results[n]["expected_reward"] for n in names], 0.4, label="E_π[r]")
    axes[1].bar(x + 0.2, [results[n]["kl_from_reference"] for n in names], 0.4, label="KL(π‖π_ref)")
    axes[1].set_xticks(x, names, rotation=20, fontsize=8)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"tabular bandit, K = {config.num_actions}, β = {config.beta}")
    experiment.save_plot(fig, workdir, "tabular_dpo")
    return ["tabular_dpo"]


def run(config: Config, workdir: pathlib.Path) -> dict[str, Any]:
    problem = make_problem(config)
    ref_logits, reward = problem[0], problem[1]
    reference_reward = float(jax.nn.softmax(ref_logits) @ reward)
    results, log_ratios, curves = {}, {}, {}
    for name in config.objectives:
        results[name], log_ratios[name], curves[f"{name}/loss"] = train(config, name, problem)
    experiment.log_curves(workdir, curves)
    report = {
        "config": dataclasses.asdict(config),
        "reference_expected_reward": reference_reward,
        "best_action_reward": float(reward.max()),
        "objectives": results,
    }
    rows = [
        {
            "objective": name,
            "expected reward": r["expected_reward"],
            "KL(π‖π_ref)": r["kl_from_reference"],
            "corr(β log-ratio, r)": r["implicit_reward_correlation"],
            "ranking accuracy": r["ranking_accuracy"],
        }
        for name, r in results.items()
    ]
    body = "\n".join(
        [
            f"K = {config.num_actions} actions, {config.num_pairs} BT-labelled pairs from the "
            f"reference, β = {config.beta}, {config.steps} full-batch Adam steps per objective.",
            f"Reference expected reward {reference_reward:+.3f}; best action "
            f"{float(reward.max()):+.3f}.",
            "",
            experiment.markdown_table(rows),
        ]
    )
    experiment.write_report(
        workdir,
        title="Pairwise objectives on a tabular bandit",
        results=report,
        body=body,
        plots=plot(config, reward, log_ratios, results, workdir),
    )
    return report


if __name__ == "__main__":
    experiment.main(Config(), run, description=__doc__.splitlines()[0])
