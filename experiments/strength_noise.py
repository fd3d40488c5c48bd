"""Reward models under label noise: plain Bradley-Terry vs the Secrets-of-RLHF-II recipes.

Synthetic preference data with a known true reward: responses are feature vectors
``x ~ N(0, I_d)``, the true reward is ``r*(x) = w·x + a·Σ_j sin(x_j)`` (``|w| = 1``), and each
training pair is labelled by ``r*`` and then has its label flipped with probability ``ρ``
(10/20/40%). Small MLP reward models are trained on the noisy pairs and scored by their
accuracy on clean held-out pairs.

Following Wang et al. (Secrets of RLHF in LLMs Part II, arXiv 2401.06080, Sec. 3; FORMULAS
A9), an ensemble of ``M`` reward models trained on the same noisy data with different
initialisations and data orders (one ``vmap``) gives each training pair a preference
strength ``μ̂ = mean_m [r_m(chosen) - r_m(rejected)]``
(:func:`jaxpref.metrics.preference_strength`). The recipes then train a fresh model with
:func:`jaxpref.losses.strength_recipe_loss`:

* ``bt``: plain Bradley-Terry (the baseline);
* ``flip``: swap chosen and rejected where ``μ̂ < flip_below``;
* ``margin``: ``μ̂`` as an adaptive margin inside the log-sigmoid (Eq. 6);
* ``flip_margin``: both;
* ``soft_label_margin``: label smoothing ``α`` on pairs with ``μ̂ < 0`` (Eq. 5) plus the margin.

The paper flips its lowest-strength 20% of HH-RLHF pairs (where ``μ̂ < 0``); here the flip
threshold is ``μ̂ < 0`` by default (``flip_below``), i.e. pairs the ensemble disagrees with.
The paper does not give ``α``; ``soft_label`` sets it.

Run: ``python experiments/strength_noise.py --workdir runs/strength_noise [--small]``. The
training-loss curves (mean over the vmapped models, per Adam step) go to ``metrics.jsonl`` and
TensorBoard as ``clean/bt/loss``, ``noise_{ρ}/ensemble/loss`` and ``noise_{ρ}/{recipe}/loss``.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpref import losses, metrics
from jaxpref.train import experiment

RECIPES = ("bt", "flip", "margin", "flip_margin", "soft_label_margin")
LABELS = {
    "bt": "plain BT",
    "flip": "Flip",
    "margin": "Margin",
    "flip_margin": "Flip + Margin",
    "soft_label_margin": "Soft Label + Margin",
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Reward models on noisy synthetic pairs.

    Attributes:
      dim: feature dimension d.
      nonlinearity: ``a`` in the true reward ``w·x + a·Σ sin(x_j)``.
      num_train: training pairs.
      num_test: clean held-out pairs.
      noise_levels: label-flip probabilities ρ.
      hidden: MLP hidden width (``d → hidden → 1``, tanh).
      epochs: passes over the training pairs (every model, ensemble or recipe).
      batch_size: pairs per Adam step.
      learning_rate: Adam learning rate.
      ensemble_size: M models behind the strength estimate.
      num_seeds: recipe models per (noise, recipe), vmapped; accuracies are averaged.
      recipes: which of ``bt``, ``flip``, ``margin``, ``flip_margin``, ``soft_label_margin``.
      flip_below: flip pairs with ``μ̂`` below this.
      soft_label: label smoothing ``α`` of the soft-label recipe (on pairs with ``μ̂ < 0``).
      seed: data, noise, initialisations and data orders.
    """

    dim: int = 16
    nonlinearity: float = 0.5
    num_train: int = 1000
    num_test: int = 5000
    noise_levels: tuple[float, ...] = (0.1, 0.2, 0.4)
    hidden: int = 64
    epochs: int = 30
    batch_size: int = 50
    learning_rate: float = 0.003
    ensemble_size: int = 10
    num_seeds: int = 5
    recipes: tuple[str, ...] = RECIPES
    flip_below: float = 0.0
    soft_label: float = 0.3
    seed: int = 0

    @classmethod
    def small(cls) -> Config:
        # ensemble_size == num_seeds: members and recipe models share one compilation.
        return cls(noise_levels=(0.4,), num_test=2000, ensemble_size=4, num_seeds=4)

    def __post_init__(self) -> None:
        unknown = set(self.recipes) - set(RECIPES)
        if unknown:
            raise ValueError(f"unknown recipes {sorted(unknown)}; known: {RECIPES}")
        if self.num_train % self.batch_size:
            raise ValueError("num_train must be a multiple of batch_size")


def true_reward(config: Config, w: jax.Array, x: jax.Array) -> jax.Array:
    return x @ w + config.nonlinearity * jnp.sum(jnp.sin(x), axis=-1)


def make_data(config: Config, key):
    """Training pairs ``[n, 2, d]`` (chosen first, by the true reward), test pairs likewise."""
    k_w, k_train, k_test = jax.random.split(key, 3)
    w = jax.random.normal(k_w, (config.dim,))
    w = w / jnp.linalg.norm(w)

    def pairs(k, n):
        x = jax.random.normal(k, (n, 2, config.dim))
        first_better = true_reward(config, w, x[:, 0]) > true_reward(config, w, x[:, 1])
        return jnp.where(first_better[:, None, None], x, x[:, ::-1])

    return pairs(k_train, config.num_train), pairs(k_test, config.num_test)


def inject_noise(pairs: jax.Array, rate: float, key) -> tuple[jax.Array, jax.Array]:
    """Swaps chosen and rejected in a ``rate`` fraction of pairs; returns (pairs, flipped)."""
    flipped = jax.random.uniform(key, pairs.shape[:1]) < rate
    return jnp.where(flipped[:, None, None], pairs[:, ::-1], pairs), flipped


def init_mlp(config: Config, key):
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (config.dim, config.hidden)) / np.sqrt(config.dim),
        "b1": jnp.zeros(config.hidden),
        "w2": jax.random.normal(k2, (config.hidden,)) / np.sqrt(config.hidden),
    }


def reward_model(params, x):
    return jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"]


def recipe_options(recipe: str, config: Config) -> dict:
    """Keyword options of :func:`jaxpref.losses.strength_recipe_loss` for ``recipe``.

    All five recipes pass the same keys so that they share two compilations (margin on or
    off): ``flip_below=-inf`` flips nothing and ``soft_label=0`` smooths nothing, exactly as
    leaving the options out.
    """
    flip = config.flip_below if "flip" in recipe else -np.inf
    soft = config.soft_label if "soft_label" in recipe else 0.0
    return {
        "flip_below": flip,
        "soft_label": soft,
        "soft_label_below": 0.0,
        "adaptive_margin": "margin" in recipe,
    }


def train_models(config: Config, recipe: str, keys, pairs, strength):
    """``len(keys)`` reward models of one recipe (vmapped over initialisation/data order).

    Returns the stacked parameters and the training losses ``[len(keys), epochs * batches]``.
    """
    options = recipe_options(recipe, config)
    margin = options.pop("adaptive_margin")
    options = {k: jnp.float32(v) for k, v in options.items()}
    return _train_models(config, margin, keys, pairs, strength, options)


@functools.partial(jax.jit, static_argnames=("config", "adaptive_margin"))
def _train_models(config: Config, adaptive_margin: bool, keys, pairs, strength, options):
    return jax.vmap(lambda k: _train_one(config, adaptive_margin, k, pairs, strength, options))(
        keys
    )


def _train_one(config: Config, adaptive_margin: bool, key, pairs, strength, options):
    """One reward model and its ``[epochs * batches]`` losses: minibatch Adam, seeded order."""
    k_init, k_order = jax.random.split(key)
    params = init_mlp(config, k_init)
    optimizer = optax.adam(config.learning_rate)
    batches = config.num_train // config.batch_size

    def loss_fn(params, batch, mu):
        rewards = reward_model(params, batch)  # [B, 2]
        return losses.strength_recipe_loss(
            rewards[:, 0], rewards[:, 1], mu, adaptive_margin=adaptive_margin, **options
        )

    def epoch(carry, key):
        order = jax.random.permutation(key, config.num_train).reshape(batches, -1)

        def step(carry, idx):
            params, state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params, pairs[idx], strength[idx])
            updates, state = optimizer.update(grads, state)
            return (optax.apply_updates(params, updates), state), loss

        return jax.lax.scan(step, carry, order)

    carry = (params, optimizer.init(params))
    (params, _), curve = jax.lax.scan(epoch, carry, jax.random.split(k_order, config.epochs))
    return params, curve.reshape(-1)


def accuracy(params, pairs) -> jax.Array:
    rewards = reward_model(params, pairs)
    return jnp.mean(rewards[:, 0] > rewards[:, 1])


def run_noise_level(config: Config, rate: float, train_pairs, test_pairs, key):
    """The ensemble's strength and every recipe at one noise rate; returns (out, loss curves)."""
    k_noise, k_ens, k_rec = jax.random.split(key, 3)
    noisy, flipped = inject_noise(train_pairs, rate, k_noise)
    zeros = jnp.zeros(config.num_train)
    members, member_losses = train_models(
        config, "bt", jax.random.split(k_ens, config.ensemble_size), noisy, zeros
    )
    curves = {f"noise_{rate:g}/ensemble/loss": np.mean(member_losses, axis=0)}
    rewards = jax.vmap(reward_model, (0, None))(members, noisy)  # [M, n, 2]
    differences = rewards[..., 0] - rewards[..., 1]
    member_acc = jax.vmap(accuracy, (0, None))(members, test_pairs)
    mu, _ = metrics.preference_strength(differences)
    disagree = mu < config.flip_below
    out = {
        "ensemble_member_accuracy": float(jnp.mean(member_acc)),
        "noisy_fraction": float(jnp.mean(flipped)),
        # How well the ensemble strength finds the flipped labels.
        "flip_precision": float(jnp.sum(disagree & flipped) / jnp.maximum(jnp.sum(disagree), 1)),
        "flip_recall": float(jnp.sum(disagree & flipped) / jnp.maximum(jnp.sum(flipped), 1)),
        "mean_strength_clean": float(jnp.mean(jnp.where(flipped, 0.0, mu)) / (1 - rate)),
        "mean_strength_flipped": float(jnp.mean(jnp.where(flipped, mu, 0.0)) / rate),
        "accuracy": {},
    }
    seeds = jax.random.split(k_rec, config.num_seeds)
    for recipe in config.recipes:
        models, recipe_losses = train_models(config, recipe, seeds, noisy, mu)
        curves[f"noise_{rate:g}/{recipe}/loss"] = np.mean(recipe_losses, axis=0)
        acc = jax.vmap(accuracy, (0, None))(models, test_pairs)
        out["accuracy"][recipe] = float(jnp.mean(acc))
        out.setdefault("accuracy_std", {})[recipe] = float(jnp.std(acc))
    return out, curves


def plot(per_noise: dict, config: Config, workdir: pathlib.Path) -> list[str]:
    import matplotlib.pyplot as plt

    rates = list(per_noise)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    width = 0.8 / len(config.recipes)
    for i, recipe in enumerate(config.recipes):
        values = [per_noise[r]["accuracy"][recipe] for r in rates]
        errors = [per_noise[r]["accuracy_std"][recipe] for r in rates]
        positions = np.arange(len(rates)) + (i - (len(config.recipes) - 1) / 2) * width
        ax.bar(positions, values, width, yerr=errors, label=LABELS[recipe])
    ax.set_xticks(np.arange(len(rates)), [f"{r:.0%} flipped" for r in rates])
    ax.set_ylabel("clean held-out accuracy")
    low = min(min(v["accuracy"].values()) for v in per_noise.values())
    ax.set_ylim(max(0.5, low - 0.05), 1.0)
    ax.legend(fontsize=8, ncol=2)
    experiment.save_plot(fig, workdir, "accuracy_vs_noise")
    return ["accuracy_vs_noise"]


def run(config: Config, workdir: pathlib.Path) -> dict:
    key = jax.random.key(config.seed, impl="rbg")  # RngBitGenerator: quick to compile on CPU
    k_data, key = jax.random.split(key)
    train_pairs, test_pairs = make_data(config, k_data)
    zeros = jnp.zeros(config.num_train)
    key, k_clean = jax.random.split(key)
    clean_models, clean_losses = train_models(
        config, "bt", jax.random.split(k_clean, config.num_seeds), train_pairs, zeros
    )
    clean = jax.vmap(accuracy, (0, None))(clean_models, test_pairs)
    curves = {"clean/bt/loss": np.mean(clean_losses, axis=0)}
    per_noise = {}
    for rate in config.noise_levels:
        key, sub = jax.random.split(key)
        per_noise[rate], noise_curves = run_noise_level(config, rate, train_pairs, test_pairs, sub)
        curves.update(noise_curves)
    experiment.log_curves(workdir, curves)
    results = {
        "clean_label_bt_accuracy": float(jnp.mean(clean)),
        "accuracy": {f"{rate:g}": v["accuracy"] for rate, v in per_noise.items()},
        "accuracy_std": {f"{rate:g}": v["accuracy_std"] for rate, v in per_noise.items()},
        "ensemble": {
            f"{rate:g}": {k: v[k] for k in v if k not in ("accuracy", "accuracy_std")}
            for rate, v in per_noise.items()
        },
    }
    plots = plot(per_noise, config, workdir)
    rows = []
    for recipe in config.recipes:
        row = {"recipe": LABELS[recipe]}
        for rate, v in per_noise.items():
            row[f"ρ={rate:g}"] = f"{v['accuracy'][recipe]:.4f} ± {v['accuracy_std'][recipe]:.4f}"
        rows.append(row)
    ens_rows = [
        {
            "ρ": rate,
            "ensemble member acc": v["ensemble_member_accuracy"],
            "flip precision (μ̂<0 ∧ noisy)": v["flip_precision"],
            "flip recall": v["flip_recall"],
            "mean μ̂ clean": v["mean_strength_clean"],
            "mean μ̂ noisy": v["mean_strength_flipped"],
        }
        for rate, v in per_noise.items()
    ]
    body = "\n".join(
        [
            f"{config.num_train} training pairs of d={config.dim} Gaussian features, true reward "
            f"w·x + {config.nonlinearity:g}·Σ sin(x_j), labels flipped with probability ρ; MLP "
            f"reward models (hidden {config.hidden}, tanh), {config.epochs} epochs of Adam "
            f"(lr {config.learning_rate}, batch {config.batch_size}). Strength μ̂ from an "
            f"ensemble of {config.ensemble_size} models trained the same way on the same noisy "
            f"pairs (different inits and data orders). Clean held-out accuracy on "
            f"{config.num_test} pairs, mean ± std over {config.num_seeds} seeds. Plain BT on "
            f"the clean labels: {results['clean_label_bt_accuracy']:.4f}.",
            "",
            experiment.markdown_table(rows),
            "",
            "How well the ensemble's strength separates the noisy labels:",
            "",
            experiment.markdown_table(ens_rows),
        ]
    )
    experiment.write_report(
        workdir,
        title="Reward models under label noise: strength-aware recipes",
        results=results,
        body=body,
        plots=plots,
    )
    return results


if __name__ == "__main__":
    experiment.main(Config(), run, description=__doc__.splitlines()[0])
