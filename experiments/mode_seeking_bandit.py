"""On-policy and negative-gradient objectives vs maximum likelihood on a categorical bandit.

The didactic bandit of Tajwar et al., "Preference Fine-Tuning of LLMs Should Leverage
Suboptimal, On-Policy Data" (arXiv 2404.14367; code Asap7772/understanding-rlhf,
``bandit_experiment/``): a categorical policy over ``K = 100`` tokens starts at a reference
``π_ref`` that is a binned ``tanh(Cauchy(-0.7, 0.4))`` on ``[-1, 1]`` (the paper's ``pi_data``:
an interior mode near token 16, and the Cauchy tails piled into the end tokens 0 and 99), and
the reward ``r(a) = exp(-((a - 70)/10)^2)`` (the paper's ``reward_4``) peaks at token 70, where
``π_ref`` has under 5% of its mass within ±10 tokens. Each update draws groups of ``N = 10``
responses (the paper's N) and fits one objective:

============================  ===========  =================
objective                     on-policy    negative gradient
============================  ===========  =================
``reinforce`` (RLOO/GRPO)     yes          yes
``online_dpo``                yes          yes
``offline_dpo``               no           yes
``online_filtered_sft``       yes          no
``offline_filtered_sft``      no           no
============================  ===========  =================

``reinforce`` is the group policy gradient (:func:`jaxpref.losses.rloo_advantages` and the
one-step :func:`jaxpref.losses.clipped_surrogate`); the DPO variants pair the best and worst
response of each group (:func:`jaxpref.losses.dpo`); filtered SFT (RAFT / ReST / best-of-N
fine-tuning) maximises the likelihood of the best response of each group. Offline methods
draw their groups from a fixed dataset sampled once from ``π_ref``; on-policy methods sample
the current policy at every update. All use the same Adam optimiser on the logits.

The headline is the number of updates until the policy's exact expected reward ``π·r``
reaches ``threshold_fraction`` of the maximum reward (capped at ``num_steps``: "not
reached"). The paper's claim is that mode-seeking objectives (on-policy sampling, negative
gradients) move probability mass to a reward peak the reference barely covers faster than
maximum-likelihood ones. A control with the reward peak at the reference's interior mode
(token 20, the paper's ``reward_5``) runs too.

Run: ``python experiments/mode_seeking_bandit.py --workdir runs/mode_seeking_bandit [--small]``.
The expected-reward curves (mean over seeds, per update) go to ``metrics.jsonl`` and
TensorBoard as ``{main,control}/{objective}/expected_reward``.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpref import losses
from jaxpref.train import experiment

METHODS = ("reinforce", "online_dpo", "offline_dpo", "online_filtered_sft", "offline_filtered_sft")
ON_POLICY = {"reinforce", "online_dpo", "online_filtered_sft"}
NEGATIVE_GRADIENT = {"reinforce", "online_dpo", "offline_dpo"}


@dataclasses.dataclass(frozen=True)
class Config:
    """The categorical bandit.

    Attributes:
      num_tokens: K, the categorical support (tokens 0..K-1, bins of ``[-1, 1]``).
      reference_loc, reference_scale: the reference is ``tanh(Cauchy(loc, scale))`` binned
        into K equal bins of ``[-1, 1]`` (exact bin masses; the paper bins 10^4 samples).
      reward_peak: token of the reward peak (70: where the reference has little mass, the
        paper's ``reward_4``).
      control_peak: a second run with the peak here (20: near the reference's mode, the
        paper's ``reward_5``); None skips it.
      reward_width: the reward is ``exp(-((a - peak) / width)^2)``.
      methods: objectives to compare (see the module docstring).
      group_size: N responses per group.
      batch_size: groups per update.
      offline_groups: groups in the fixed offline dataset drawn from the reference.
      beta: DPO's β.
      learning_rate: Adam learning rate on the logits (same for every objective).
      num_steps: update cap.
      threshold_fraction: the target, as a fraction of the maximum reward.
      num_seeds: independent runs (vmapped); steps-to-threshold is their median.
      seed: root seed.
    """

    num_tokens: int = 100
    reference_loc: float = -0.7
    reference_scale: float = 0.4
    reward_peak: float = 70.0
    control_peak: float | None = 20.0
    reward_width: float = 10.0
    methods: tuple[str, ...] = METHODS
    group_size: int = 10
    batch_size: int = 64
    offline_groups: int = 1000
    beta: float = 0.1
    learning_rate: float = 0.01
    num_steps: int = 2000
    threshold_fraction: float = 0.9
    num_seeds: int = 5
    seed: int = 0

    @classmethod
    def small(cls) -> Config:
        return cls(num_steps=600, num_seeds=2, control_peak=None)

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown methods {sorted(unknown)}; known: {METHODS}")


def reference_policy(config: Config) -> np.ndarray:
    """Exact bin masses of ``tanh(Cauchy(loc, scale))`` over K equal bins of ``[-1, 1]``."""
    edges = np.linspace(-1.0, 1.0, config.num_tokens + 1)
    with np.errstate(divide="ignore"):
        latent = np.arctanh(edges)  # ±inf at the ends
    cdf = 0.5 + np.arctan((latent - config.reference_loc) / config.reference_scale) / np.pi
    return np.diff(cdf)


def reward_function(config: Config, peak: float) -> np.ndarray:
    tokens = np.arange(config.num_tokens)
    return np.exp(-(((tokens - peak) / config.reward_width) ** 2))


def _sample(key, logits, shape):
    """Categorical samples by inverse CDF (much cheaper on a CPU than Gumbel-max for K=100)."""
    cdf = jnp.cumsum(jax.nn.softmax(logits))
    u = jax.random.uniform(key, (*shape, 1)) * cdf[-1]
    return jnp.minimum(jnp.sum(cdf <= u, axis=-1), logits.shape[-1] - 1)


def _best_and_worst(responses, rewards):
    """Per group: the best and worst response and whether they differ in reward."""
    best = jnp.take_along_axis(responses, jnp.argmax(rewards, -1)[..., None], -1)[..., 0]
    worst = jnp.take_along_axis(responses, jnp.argmin(rewards, -1)[..., None], -1)[..., 0]
    return best, worst, jnp.max(rewards, -1) > jnp.min(rewards, -1)


def objective(method: str, config: Config):
    """``(logits, responses [B, N], rewards [B, N], log_ref) -> loss`` for ``method``."""

    def loss(logits, responses, rewards, log_ref):
        logp = jax.nn.log_softmax(logits)
        if method == "reinforce":
            advantages = losses.rloo_advantages(rewards)
            return losses.clipped_surrogate(
                logp[responses][..., None], None, None, advantages, beta=0.0
            )
        best, worst, distinct = _best_and_worst(responses, rewards)
        if method in ("online_dpo", "offline_dpo"):
            return losses.dpo(
                logp[best],
                logp[worst],
                log_ref[best],
                log_ref[worst],
                beta=config.beta,
                where=distinct,
            )
        return -jnp.mean(logp[best])  # filtered SFT: likelihood of each group's best response

    return loss


@functools.partial(jax.jit, static_argnames=("method", "config"))
def train(method: str, config: Config, key, reference, reward):
    """``[num_steps + 1]`` exact expected rewards of one run."""
    log_ref = jnp.log(reference)
    optimizer = optax.adam(config.learning_rate)
    loss_fn = objective(method, config)
    shape = (config.batch_size, config.group_size)
    key_data, key_steps = jax.random.split(key)
    dataset = _sample(key_data, log_ref, (config.offline_groups, config.group_size))

    def step(carry, key):
        logits, state = carry
        if method in ON_POLICY:
            responses = _sample(key, logits, shape)
        else:
            rows = jax.random.randint(key, (config.batch_size,), 0, config.offline_groups)
            responses = dataset[rows]
        grads = jax.grad(loss_fn)(logits, responses, reward[responses], log_ref)
        updates, state = optimizer.update(grads, state)
        logits = optax.apply_updates(logits, updates)
        return (logits, state), jax.nn.softmax(logits) @ reward

    carry = (log_ref, optimizer.init(log_ref))
    _, curve = jax.lax.scan(step, carry, jax.random.split(key_steps, config.num_steps))
    return jnp.concatenate([(reference @ reward)[None], curve])


def steps_to(curve: np.ndarray, target: float) -> int | None:
    hit = np.nonzero(curve >= target)[0]
    return int(hit[0]) if hit.size else None


def run_setting(config: Config, peak: float, key) -> dict:
    reference = reference_policy(config)
    reward = reward_function(config, peak)
    target = config.threshold_fraction * float(reward.max())
    out = {"target": target, "reference_reward": float(reference @ reward), "methods": {}}
    keys = jax.random.split(key, config.num_seeds)
    for method in config.methods:
        curves = jax.vmap(lambda k, m=method: train(m, config, k, reference, reward))(keys)
        curves = np.asarray(jax.device_get(curves))
        per_seed = [steps_to(c, target) for c in curves]
        reached = sorted(s for s in per_seed if s is not None)
        # The median counts "not reached" as infinitely slow.
        median = reached[len(per_seed) // 2] if len(reached) > len(per_seed) // 2 else None
        out["methods"][method] = {
            "steps_to_threshold": median,
            "steps_to_threshold_per_seed": per_seed,
            "final_reward": float(np.mean(curves[:, -1])),
            "curve": np.mean(curves, axis=0),
        }
    return out


def plot(settings: dict, config: Config, workdir: pathlib.Path) -> list[str]:
    import matplotlib.pyplot as plt

    reference = reference_policy(config)
    fig, axes = plt.subplots(1, len(settings) + 1, figsize=(4.6 * (len(settings) + 1), 3.6))
    tokens = np.arange(config.num_tokens)
    axes[0].bar(tokens, reference, width=1.0, color="lightgrey", label="π_ref")
    twin = axes[0].twinx()
    for name, setting in settings.items():
        twin.plot(tokens, reward_function(config, setting["peak"]), label=f"reward ({name})")
    axes[0].set_xlabel("token")
    axes[0].set_ylabel("π_ref(token)")
    twin.set_ylabel("reward")
    twin.legend(fontsize=8, loc="upper right")
    for ax, (name, setting) in zip(axes[1:], settings.items(), strict=True):
        for method, m in setting["methods"].items():
            style = "-" if method in ON_POLICY else "--"
            ax.plot(m["curve"], style, label=method)
        ax.axhline(setting["target"], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("update")
        ax.set_ylabel(f"expected reward (mean of {config.num_seeds} seeds)")
        ax.set_title(f"{name}: reward peak at token {setting['peak']:g}", fontsize=10)
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    experiment.save_plot(fig, workdir, "expected_reward")
    return ["expected_reward"]


def run(config: Config, workdir: pathlib.Path) -> dict:
    peaks = {"main": config.reward_peak}
    if config.control_peak is not None:
        peaks["control"] = config.control_peak
    key = jax.random.key(config.seed, impl="rbg")  # RngBitGenerator: quick to compile on CPU
    settings = {}
    for name, peak in peaks.items():
        key, sub = jax.random.split(key)
        settings[name] = {"peak": peak, **run_setting(config, peak, sub)}

    experiment.log_curves(
        workdir,
        {
            f"{name}/{method}/expected_reward": m["curve"]
            for name, setting in settings.items()
            for method, m in setting["methods"].items()
        },
    )

    def strip(setting):
        return {m: v["steps_to_threshold"] for m, v in setting["methods"].items()}

    main = settings["main"]
    results = {
        "steps_to_threshold": strip(main),
        "steps_to_threshold_per_seed": {
            m: v["steps_to_threshold_per_seed"] for m, v in main["methods"].items()
        },
        "final_reward": {m: v["final_reward"] for m, v in main["methods"].items()},
        "target": main["target"],
        "reference_reward": main["reference_reward"],
        "step_cap": config.num_steps,
    }
    if "control" in settings:
        results["control_steps_to_threshold"] = strip(settings["control"])
    plots = plot(settings, config, workdir)
    rows = []
    for method in config.methods:
        row = {
            "objective": method,
            "on-policy": "yes" if method in ON_POLICY else "no",
            "negative gradient": "yes" if method in NEGATIVE_GRADIENT else "no",
        }
        for name, setting in settings.items():
            m = setting["methods"][method]
            steps = m["steps_to_threshold"]
            row[f"{name}: updates to target"] = "not reached" if steps is None else steps
            row[f"{name}: final reward"] = m["final_reward"]
        rows.append(row)
    body = "\n".join(
        [
            f"Categorical policy over {config.num_tokens} tokens initialised at π_ref "
            f"(binned tanh(Cauchy({config.reference_loc}, {config.reference_scale})): interior "
            "mode near token 16, tails piled into tokens 0 and 99). "
            f"Reward exp(-((a - peak)/{config.reward_width:g})^2); main peak at token "
            f"{config.reward_peak:g} (π_ref reward {main['reference_reward']:.3f}). Each update: "
            f"{config.batch_size} groups of {config.group_size} responses, Adam "
            f"lr {config.learning_rate}, DPO β {config.beta}; offline data: "
            f"{config.offline_groups} groups from π_ref. Target: expected reward ≥ "
            f"{config.threshold_fraction:g} × max; median over {config.num_seeds} seeds, cap "
            f"{config.num_steps} updates.",
            "",
            experiment.markdown_table(rows),
        ]
    )
    experiment.write_report(
        workdir,
        title="Mode-seeking vs maximum likelihood on a categorical bandit",
        results=results,
        body=body,
        plots=plots,
    )
    return results


if __name__ == "__main__":
    experiment.main(Config(), run, description=__doc__.splitlines()[0])
