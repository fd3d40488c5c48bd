"""The on-policy update step: sample, score and update in one pure ``(state, batch) -> ...``.

The on-policy twin of :mod:`jaxpref.train.objectives`: the one place that knows how a group
(GRPO family) or game (Nash-learning family) objective is fed from freshly sampled
completions. One step, all inside one compiled program with no host round trip:

1. split ``state.rng``; sample ``group_size`` completions of every left-padded prompt with
   :func:`jaxpref.models.generate` from the current parameters (under ``stop_gradient``);
2. score them with a pure-JAX ``reward_fn`` (a programmatic reward or a reward model) and/or
   a ``preference_fn`` giving ``P(y_i ≻ y_j)`` within each group;
3. run ONE forward pass on prompt+completion for the policy's per-token log-probs (with
   gradient) and one for the frozen reference ``state.reference`` (``stop_gradient``);
4. turn scores into the objective's constants (advantages, preference targets, win rates),
   call the registered objective, and apply the optimizer.

Group family (``"grpo"`` -> :func:`jaxpref.losses.clipped_surrogate`): advantages from
``advantages="grpo"`` (rewards, :func:`~jaxpref.losses.grpo_advantages`), ``"dr_grpo"`` (no
std division), ``"rloo"`` (:func:`~jaxpref.losses.rloo_advantages`) or ``"pref_grpo"``
(win rates of the preference matrix, :func:`~jaxpref.losses.pref_grpo_advantages`).

Game family, targets from the preference model over the ``G(G-1)/2`` pairs ``i < j`` of each
group (or per response for SPPO), the opponent ``π_t`` estimated by the group itself:

* ``online_ipo``: target ``P(y_i ≻ y_j)``;
* ``online_ipo_omd``: win rates ``P̂(y ≻ π_t) = mean_k P(y ≻ y_k)`` (self included);
* ``sppo``: per-response win rates, ``π_t`` = the sampling policy (its log-probs, detached);
* ``egpo``: extragradient: a look-ahead step with win rates against ``π_t``, then ``G`` fresh
  opponents sampled from the look-ahead policy, and the real step (from ``θ_t``) with win
  rates against them (:func:`jaxpref.losses.extragradient`).

``nash_md``, ``nash_md_pg`` (which need samples from the geometric mixture of policy and
reference) and ``gpo`` (which needs a GPM score table) raise ``NotImplementedError``.

References:
  Shao et al., DeepSeekMath, 2024, arXiv:2402.03300 (GRPO).
  Wang et al., Pref-GRPO, 2025, arXiv:2508.20751.
  Calandriello et al., Human Alignment of Large Language Models through Online Preference
  Optimisation, 2024, arXiv:2403.08635 (online IPO).
  Wu et al., Self-Play Preference Optimization, 2024, arXiv:2405.00675 (SPPO).
  Zhou, Fazel & Du, Extragradient Preference Optimization, 2025, arXiv:2503.08942 (EGPO).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxpref import losses
from jaxpref.logprobs import sequence_logps_from_hidden, token_logps
from jaxpref.models import generate
from jaxpref.train.guards import all_finite
from jaxpref.train.objectives import Objective
from jaxpref.train.step import ModelDef, TrainState

Array = jax.Array
Batch = Mapping[str, Array]
#: ``reward_fn(prompt_ids [N, P], prompt_mask [N, P], tokens [N, T], mask [N, T], **extras)
#: -> [N]`` with ``N = B * G`` (prompts repeated per sample).
RewardFn = Callable[..., Array]
#: ``preference_fn(prompt_ids [B, P], prompt_mask [B, P], tokens [B, K, T], mask [B, K, T],
#: **extras) -> [B, K, K]`` with ``[b, i, j] = P(y_i ≻ y_j)``.
PreferenceFn = Callable[..., Array]

#: Families trained by :func:`make_onpolicy_step`.
ONPOLICY_FAMILIES = ("group", "game")
#: Advantage estimators of the group family.
ADVANTAGES = ("grpo", "dr_grpo", "rloo", "pref_grpo")
_NOT_IMPLEMENTED = {
    "nash_md": "sampling from the geometric mixture of policy and reference",
    "nash_md_pg": "sampling from the geometric mixture of policy and reference",
    "gpo": "a GPM score table s(y_i ≻ y_j) instead of P(y_i ≻ y_j)",
}
_BATCH_KEYS = ("prompt_ids", "prompt_mask", "example_mask")
_STEP_ARGS = ("where", "reduce_fn", "token_where")


# --------------------------------------------------------------------------- sampling


class Rollout(NamedTuple):
    """Sampled completions of the repeated prompts, ``N = B * G`` rows (prompt-major).

    Attributes:
      input_ids: ``[N, P + T]`` prompt then completion.
      attention_mask: ``[N, P + T]`` False at prompt padding and after the end token.
      tokens: ``[N, T]`` sampled completion ids.
      mask: ``[N, T]`` True at generated tokens (the end token included).
    """

    input_ids: Array
    attention_mask: Array
    tokens: Array
    mask: Array


def _repeat(x: Array, times: int) -> Array:
    return jnp.repeat(jnp.asarray(x), times, axis=0)


def sample(
    model_def: ModelDef,
    params: Any,
    prompt_ids: Array,
    prompt_mask: Array,
    key: Array,
    *,
    group_size: int,
    max_new_tokens: int,
    **sampling: Any,
) -> Rollout:
    """``group_size`` completions of each prompt from ``stop_gradient(params)``."""
    model, _ = model_def.merge(jax.lax.stop_gradient(params))
    ids, mask = _repeat(prompt_ids, group_size), _repeat(prompt_mask, group_size).astype(bool)
    out = generate(model, ids, prompt_mask=mask, max_new_tokens=max_new_tokens, rng=key, **sampling)
    return Rollout(
        jnp.concatenate([ids, out.tokens], axis=1),
        jnp.concatenate([mask, out.mask], axis=1),
        out.tokens,
        out.mask,
    )


def completion_logps(
    model: Any,
    rollout: Rollout,
    *,
    chunked: bool = True,
    logps_fn: Callable[..., Array] | None = None,
) -> Array:
    """Per-token log-probs ``[N, T]`` of the completions (0 at padding) from ONE forward.

    The chunked path calls ``sequence_logps_from_hidden`` (or ``logps_fn``) on
    ``[N*T, 1, d]`` "sequences" of one token each, so no ``[N, T, vocab]`` tensor exists.
    """
    hidden = model.hidden_states(rollout.input_ids, attention_mask=rollout.attention_mask)
    n, t = rollout.tokens.shape
    hidden = hidden[:, -t - 1 : -1]  # the states that predict the completion tokens
    if chunked:
        fn = logps_fn or sequence_logps_from_hidden
        flat = fn(
            hidden.reshape(n * t, 1, hidden.shape[-1]),
            model.unembedding,
            rollout.tokens.reshape(n * t, 1),
            where=rollout.mask.reshape(n * t, 1),
        )
        return flat.reshape(n, t)
    lp = token_logps(model.logits(hidden), rollout.tokens)
    return jnp.where(rollout.mask, lp, 0.0)


def bradley_terry_preference_fn(reward_fn: RewardFn, *, scale: float = 1.0) -> PreferenceFn:
    """A preference model from a reward: ``P(y_i ≻ y_j) = σ(scale · (r_i - r_j))``."""

    def preference_fn(prompt_ids, prompt_mask, tokens, mask, **extras):
        b, k, t = tokens.shape
        extras = {name: _repeat(v, k) for name, v in extras.items()}
        r = reward_fn(
            _repeat(prompt_ids, k),
            _repeat(prompt_mask, k),
            tokens.reshape(b * k, t),
            mask.reshape(b * k, t),
            **extras,
        ).reshape(b, k)
        return jax.nn.sigmoid(scale * (r[:, :, None] - r[:, None, :]))

    return preference_fn


# --------------------------------------------------------------------------- objectives


class _Data(NamedTuple):
    """The constants of one update: the rollout, reference/old log-probs and targets."""

    rollout: Rollout
    valid: Array  # [B, G] samples that count
    ref: Array | None  # [N, T] reference token log-probs
    old: Array | None  # [N, T] sampling-policy token log-probs (None: detached current)
    target: Array  # [B, G] advantages / win rates, or [B, G, G] preferences


def _pairs(group_size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(group_size, 1)


def _seq(x: Array, group_size: int, average: bool, mask: Array) -> Array:
    total = jnp.sum(x, axis=-1)
    if average:
        total = total / jnp.maximum(jnp.sum(mask, axis=-1), 1)
    return total.reshape(-1, group_size)


def _need_ref(name: str, ref: Array | None) -> Array:
    if ref is None:
        raise ValueError(
            f"objective {name!r} needs a reference model: build the state with "
            "init_state(..., reference=...)"
        )
    return ref


def _online_ipo_args(name, lp, old, ref, target, valid):
    i, j = _pairs(lp.shape[-1])
    ref = _need_ref(name, ref)
    return (lp[:, i], lp[:, j], ref[:, i], ref[:, j], target[:, i, j]), valid[:, i] & valid[:, j]


def _win_rate_pair_args(name, lp, old, ref, target, valid):
    i, j = _pairs(lp.shape[-1])
    ref = _need_ref(name, ref)
    args = (lp[:, i], lp[:, j], ref[:, i], ref[:, j], target[:, i], target[:, j])
    return args, valid[:, i] & valid[:, j]


def _sppo_args(name, lp, old, ref, target, valid):
    return (lp, old, target), valid


#: Game objective -> builder of its positional arguments from sequence log-probs ``[B, G]``.
_GAME_ARGS = {
    "online_ipo": _online_ipo_args,
    "online_ipo_omd": _win_rate_pair_args,
    "egpo": _win_rate_pair_args,
    "sppo": _sppo_args,
}
#: Game objectives whose target is the ``[B, G, G]`` preference matrix (others: win rates).
_PREFERENCE_TARGET = ("online_ipo",)


def _objective_loss(
    objective: Objective, logps: Array, data: _Data
) -> tuple[Array, dict[str, Array]]:
    """The objective's loss from per-token policy log-probs ``[N, T]`` and the constants."""
    fn = losses.get(objective.name)
    mask, valid = data.rollout.mask, data.valid
    old = jax.lax.stop_gradient(logps) if data.old is None else data.old
    if objective.family == "group":
        where = valid.reshape(-1)
        loss = fn(
            logps,
            data.old,
            data.ref,
            data.target.reshape(-1),
            token_where=mask,
            where=where,
            **objective.options,
        )
        keep = ("epsilon", "epsilon_high", "log_ratio_limit")
        opts = {k: v for k, v in objective.options.items() if k in keep}
        stats = losses.surrogate_metrics(
            logps, old, data.ref, data.target.reshape(-1), token_where=mask, where=where, **opts
        )
        return loss, {k: stats[k] for k in ("clip_fraction", "ratio_mean")}
    group = valid.shape[-1]
    average = losses.spec(objective.name).average_logps
    lp = _seq(logps, group, average, mask)
    ref = None if data.ref is None else _seq(data.ref, group, average, mask)
    args, where = _GAME_ARGS[objective.name](
        objective.name, lp, _seq(old, group, average, mask), ref, data.target, valid
    )
    return fn(*args, where=where, **objective.options), {}


def _validate(objective: Objective) -> None:
    spec = losses.spec(objective.name)  # KeyError listing the known names
    if objective.name in _NOT_IMPLEMENTED:
        raise NotImplementedError(
            f"the on-policy step does not train {objective.name!r} yet: it needs "
            f"{_NOT_IMPLEMENTED[objective.name]}. Trained: 'grpo', {sorted(_GAME_ARGS)}"
        )
    if spec.family not in ONPOLICY_FAMILIES:
        raise ValueError(
            f"objective {objective.name!r} is of family {spec.family!r}, trained by the offline "
            "step (jaxpref.train.step.make_train_step), not the on-policy one"
        )
    if spec.family == "game" and objective.name not in _GAME_ARGS:
        raise NotImplementedError(f"no on-policy adapter for game objective {objective.name!r}")
    params = inspect.signature(spec.fn).parameters.values()
    accepted = {p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _STEP_ARGS}
    unknown = sorted(set(objective.options) - accepted)
    if unknown:
        raise ValueError(
            f"objective {objective.name!r} does not take option(s) {unknown}; it takes "
            f"{sorted(accepted)}"
        )


# --------------------------------------------------------------------------- the step


def _masked_stats(x: Array, where: Array) -> tuple[Array, Array]:
    n = jnp.maximum(jnp.sum(where), 1)
    mean = jnp.sum(jnp.where(where, x, 0.0)) / n
    var = jnp.sum(jnp.where(where, jnp.square(x - mean), 0.0)) / n
    return mean, jnp.sqrt(var)


def _win_rates(preferences: Array, valid: Array) -> Array:
    return losses.empirical_win_rates(preferences, opponent_where=valid)


def make_onpolicy_step(
    model_def: ModelDef,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    group_size: int,
    max_new_tokens: int,
    reward_fn: RewardFn | None = None,
    preference_fn: PreferenceFn | None = None,
    advantages: str | None = None,
    advantage_options: Mapping[str, Any] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    num_iterations: int = 1,
    learning_rate_fn: Callable[[Array], Array] | None = None,
    chunked: bool = True,
    logps_fn: Callable[..., Array] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]:
    """Builds the pure on-policy update step (see the module docstring for the objectives).

    Args:
      model_def: from :func:`jaxpref.train.step.split_model`.
      objective: a registered ``group`` or ``game`` objective and its keyword options, e.g.
        ``Objective("grpo", {"beta": 0.04})`` or ``Objective("online_ipo", {"beta": 0.1})``.
      optimizer: any optax transformation.
      group_size: completions sampled per prompt, ``G >= 2``.
      max_new_tokens: completion length ``T`` (static).
      reward_fn: :data:`RewardFn`; the ``reward/*`` metrics, and the advantages of
        ``"grpo"``, ``"dr_grpo"``, ``"rloo"``. Batch entries other than ``prompt_ids``,
        ``prompt_mask``, ``example_mask`` are passed to it as keywords (repeated per sample).
      preference_fn: :data:`PreferenceFn`; required by ``"pref_grpo"`` and by the game
        objectives (see :func:`bradley_terry_preference_fn`). Given when unused: an error.
      advantages: one of :data:`ADVANTAGES` (group family only); default ``"pref_grpo"``
        when only a ``preference_fn`` is given, else ``"grpo"``.
      advantage_options: keyword options of the advantage function (e.g. ``epsilon``).
      temperature, top_k, top_p, eos_token_id, pad_token_id: sampling, as in
        :func:`jaxpref.models.generate` (``temperature > 0``).
      num_iterations: optimizer steps on each batch of samples (GRPO's ``μ``); above 1 the
        sampling policy's log-probs are the clipping's ``π_old`` and SPPO's ``π_t``. EGPO
        takes exactly one (extragradient) update.
      learning_rate_fn: the schedule, only to report ``learning_rate``.
      chunked, logps_fn: as in :func:`jaxpref.train.step.make_train_step`.

    Returns:
      ``step(state, batch) -> (state, metrics)``, pure. ``batch`` holds left-padded
      ``prompt_ids`` and ``prompt_mask`` ``[B, P]`` and optionally ``example_mask [B]``.
      Metrics (scalars): ``loss``, ``grad_norm``, ``finite``, ``tokens``,
      ``completion_length``, ``reward/mean`` and ``reward/std`` (with a ``reward_fn``),
      ``kl`` (token-mean k3 estimate of ``KL(π‖π_ref)``, with a reference), ``clip_fraction``
      and ``ratio_mean`` (group family). A non-finite loss or gradient returns the input
      state unchanged (rng included) with ``finite = 0``; otherwise ``state.rng`` advances.

    Raises:
      NotImplementedError: for ``nash_md``, ``nash_md_pg``, ``gpo``.
      ValueError: for offline objectives, unknown options, missing or unused scorers.
    """
    _validate(objective)
    family, name = objective.family, objective.name
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2, got {group_size}")
    if num_iterations < 1 or (name == "egpo" and num_iterations != 1):
        raise ValueError(f"num_iterations must be >= 1 (exactly 1 for egpo), got {num_iterations}")
    if not temperature > 0:
        raise ValueError(f"on-policy sampling needs temperature > 0, got {temperature}")
    if family == "group":
        if advantages is None:
            only_pref = preference_fn is not None and reward_fn is None
            advantages = "pref_grpo" if only_pref else "grpo"
        if advantages not in ADVANTAGES:
            raise ValueError(f"advantages must be one of {ADVANTAGES}, got {advantages!r}")
        uses_preference = advantages == "pref_grpo"
    else:
        if advantages is not None or advantage_options:
            raise ValueError(f"advantages apply to the group family, not {name!r}")
        uses_preference = True
    if uses_preference and preference_fn is None:
        hint = " (bradley_terry_preference_fn(reward_fn) derives one from a reward)"
        raise ValueError(f"{name!r} with these options needs a preference_fn{hint}")
    if not uses_preference and preference_fn is not None:
        raise ValueError(f"preference_fn is unused by advantages={advantages!r}")
    if not uses_preference and reward_fn is None:
        raise ValueError(f"advantages={advantages!r} needs a reward_fn")
    adv_opts = dict(advantage_options or {})
    sampling = dict(
        group_size=group_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )

    def logps_of(params: Any, rollout: Rollout) -> Array:
        return completion_logps(
            model_def.merge(params)[0], rollout, chunked=chunked, logps_fn=logps_fn
        )

    def loss_fn(params: Any, data: _Data) -> tuple[Array, dict[str, Array]]:
        lp = logps_of(params, data.rollout)
        loss, aux = _objective_loss(objective, lp, data)
        if data.ref is not None:
            zeros, where = jnp.zeros(lp.shape[:1]), data.valid.reshape(-1)
            kl = losses.surrogate_metrics(
                lp, None, data.ref, zeros, token_where=data.rollout.mask, where=where
            )
            aux["kl"] = kl["kl"]
        return loss, jax.tree.map(jax.lax.stop_gradient, aux)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def preferences(batch: Batch, tokens: Array, mask: Array, extras: Batch) -> Array:
        b = batch["prompt_ids"].shape[0]
        shape = (b, -1, tokens.shape[-1])
        p = preference_fn(
            batch["prompt_ids"],
            batch["prompt_mask"],
            tokens.reshape(shape),
            mask.reshape(shape),
            **extras,
        )
        return jax.lax.stop_gradient(jnp.asarray(p, jnp.float32))

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
        prompt_ids, prompt_mask = batch["prompt_ids"], batch["prompt_mask"]
        b = prompt_ids.shape[0]
        n = b * group_size
        example_mask = jnp.asarray(batch.get("example_mask", jnp.ones(b, bool)), bool)
        valid = jnp.broadcast_to(example_mask[:, None], (b, group_size))
        extras = {k: v for k, v in batch.items() if k not in _BATCH_KEYS}
        key = jax.random.wrap_key_data(state.rng)
        next_key, sample_key, opponent_key = jax.random.split(key, 3)
        rollout = sample(model_def, state.params, prompt_ids, prompt_mask, sample_key, **sampling)
        metrics: dict[str, Array] = {}
        seq_valid = valid.reshape(-1)
        lengths = jnp.sum(rollout.mask, axis=-1).astype(jnp.float32)
        metrics["completion_length"], _ = _masked_stats(lengths, seq_valid)
        metrics["tokens"] = jnp.sum(jnp.where(seq_valid[:, None], rollout.mask, False))
        rewards = None
        if reward_fn is not None:
            extras_rep = {k: _repeat(v, group_size) for k, v in extras.items()}
            rewards = reward_fn(
                _repeat(prompt_ids, group_size),
                _repeat(prompt_mask, group_size),
                rollout.tokens,
                rollout.mask,
                **extras_rep,
            )
            rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
            if rewards.shape != (n,):
                raise ValueError(f"reward_fn must return [B*G]=[{n}], got {rewards.shape}")
            metrics["reward/mean"], metrics["reward/std"] = _masked_stats(rewards, seq_valid)
            rewards = rewards.reshape(b, group_size)
        prefs = None
        if uses_preference:
            prefs = preferences(batch, rollout.tokens, rollout.mask, extras)
        if family == "group":
            if advantages == "pref_grpo":
                target = losses.pref_grpo_advantages(prefs, where=valid, **adv_opts)
            elif advantages == "rloo":
                target = losses.rloo_advantages(rewards, where=valid, **adv_opts)
            else:
                scale = advantages == "grpo"
                target = losses.grpo_advantages(
                    rewards, scale_by_std=scale, where=valid, **adv_opts
                )
        elif name in _PREFERENCE_TARGET:
            target = prefs
        else:
            target = _win_rates(prefs, valid)
        ref = None
        if state.reference is not None:
            ref = jax.lax.stop_gradient(logps_of(state.reference, rollout))
        old = None
        if num_iterations > 1:
            old = jax.lax.stop_gradient(logps_of(state.params, rollout))
        data = _Data(rollout, valid, ref, old, target)

        if name == "egpo":
            lookahead = losses.extragradient(lambda p, d: loss_fn(p, d)[0], optimizer).lookahead
            half = lookahead(state.params, state.opt_state, data)
            opp = sample(model_def, half, prompt_ids, prompt_mask, opponent_key, **sampling)
            both = lambda x, y: jnp.concatenate(
                [x.reshape(b, group_size, -1), y.reshape(b, group_size, -1)], axis=1
            )
            p = preferences(
                batch, both(rollout.tokens, opp.tokens), both(rollout.mask, opp.mask), extras
            )
            target = _win_rates(p[:, :group_size, group_size:], valid)
            data = data._replace(target=target)

        def update(carry, _):
            params, opt_state = carry
            (loss, aux), grads = grad_fn(params, data)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            out = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
            finite = all_finite((loss, grads))
            return (optax.apply_updates(params, updates), opt_state), (out, finite)

        (params, opt_state), (stats, finite) = jax.lax.scan(
            update, (state.params, state.opt_state), length=num_iterations
        )
        finite = jnp.all(finite)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state._replace(
            step=state.step + finite.astype(jnp.int32),
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            rng=keep(jax.random.key_data(next_key), state.rng),
        )
        metrics.update({k: jnp.mean(v) for k, v in stats.items()})
        metrics["finite"] = finite.astype(jnp.float32)
        if learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
        return new_state, metrics

    return step
