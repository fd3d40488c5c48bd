"""The one module that knows the objective families.

It turns a batch (see :mod:`jaxpref.data.batching`) plus model outputs into the arrays a
registered objective takes, calls it, and returns ``(loss, metrics)``. Everything else in
:mod:`jaxpref.train` (steps, loop, checkpoints) is family-agnostic.

How arguments are found: the objective's positional parameter names (its contract, see
:mod:`jaxpref.losses`) are looked up in a table of the quantities this batch provides, for
example ``policy_chosen_logps`` or ``preference_strength``. An objective asking for a
quantity the engine cannot provide gets an error naming it; nothing is silently zero-filled.

Families:

* ``pairwise``: responses on an explicit pair axis ``[B, 2, T]``; chosen and rejected run in
  ONE forward pass of ``2B`` sequences; log-probs from final hidden states without the logits
  tensor (:func:`jaxpref.logprobs.sequence_logps_from_hidden`).
* ``listwise``: ``[B, K, T]``; scores ``β (log π - log π_ref)`` (option ``beta``), labels
  from the batch's ``scores`` (or negated ``ranks``), items masked by ``item_mask``.
* ``unpaired``: ``[B, T]`` with ``desirable [B]``; KTO's reference point is estimated from the
  batch's own completions (detached), a documented simplification of the paper's
  mismatched-pair estimate.
* ``sft``: the negative log-likelihood of each response (summed over its tokens), averaged
  over examples; ``[B, T]`` or the chosen responses of pairs.
* ``reward``: a scalar reward head on the last non-padding token; Bradley-Terry style losses
  with the batch's ``margin`` when present.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from jaxpref import losses, metrics
from jaxpref.logprobs import sequence_logps, sequence_logps_from_hidden
from jaxpref.losses._reduce import reduce_losses

Array = jax.Array
Batch = Mapping[str, Array]

#: Families this engine trains offline (the on-policy ones live in :mod:`.onpolicy`).
OFFLINE_FAMILIES = ("pairwise", "listwise", "unpaired", "sft", "reward")


@dataclasses.dataclass(frozen=True)
class Objective:
    """A registered objective by name, with its keyword options (e.g. ``{"beta": 0.1}``).

    ``name="sft"`` is supervised fine-tuning (per-sequence NLL, averaged over examples), not
    in the registry.
    """

    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def family(self) -> str:
        return "sft" if self.name == "sft" else losses.spec(self.name).family

    @property
    def needs_reference(self) -> bool:
        return self.name != "sft" and losses.spec(self.name).needs_reference

    @property
    def average_logps(self) -> bool:
        return self.name != "sft" and losses.spec(self.name).average_logps

    def validate(self) -> None:
        """Raises ValueError for an unknown name or an option the objective doesn't take."""
        if self.name == "sft":
            if self.options:
                raise ValueError(f"sft takes no options, got {sorted(self.options)}")
            return
        spec = losses.spec(self.name)  # KeyError listing known names
        if spec.family not in OFFLINE_FAMILIES:
            raise ValueError(
                f"objective {self.name!r} is of family {spec.family!r}, trained by the on-policy "
                f"step (jaxpref.train.onpolicy), not the offline one"
            )
        accepted = set(_keyword_options(spec.fn))
        if spec.family == "listwise":
            accepted.add("beta")
        unknown = sorted(set(self.options) - accepted)
        if unknown:
            raise ValueError(
                f"objective {self.name!r} does not take option(s) {unknown}; it takes "
                f"{sorted(accepted)}"
            )


def _keyword_options(fn: Callable[..., Any]) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("where", "reduce_fn")
    ]


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return [
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


# --------------------------------------------------------------------------- log-probs


def _flatten_items(x: Array) -> Array:
    return x.reshape((-1, x.shape[-1]))


def response_logps(
    model: Any,
    batch: Batch,
    *,
    average: bool = False,
    chunked: bool = True,
    logps_fn: Callable[..., Array] | None = None,
) -> tuple[Array, Array]:
    """Per-response log-probs ``[B, (I)]`` and final hidden states from ONE forward pass.

    All responses of the batch (both sides of a pair, all K list items) are flattened into
    one ``[B*I, T]`` batch, run once, and reduced over the response tokens (``loss_mask``).

    Args:
      model: a :class:`jaxpref.models.Transformer` (``hidden_states``, ``unembedding``).
      batch: token arrays ``[B, (I,) T]``.
      average: length-averaged log-probs instead of sums.
      chunked: use the chunked hidden-state path (no ``[.., vocab]`` logits tensor).
      logps_fn: override for the chunked function (e.g. a ``shard_map``-ped version).

    Returns:
      ``(logps [B, (I)], hidden [B*I, T, d])``.
    """
    ids = batch["input_ids"]
    lead = ids.shape[:-1]
    segment_ids = batch.get("segment_ids")
    if segment_ids is not None:
        raise ValueError("packed batches (segment_ids) are not supported by the offline step")
    hidden = model.hidden_states(
        _flatten_items(ids),
        attention_mask=_flatten_items(batch["attention_mask"]),
        positions=_flatten_items(batch["positions"]),
    )
    targets = _flatten_items(batch["targets"])
    mask = _flatten_items(batch["loss_mask"])
    if chunked:
        fn = logps_fn or sequence_logps_from_hidden
        logps = fn(hidden, model.unembedding, targets, where=mask, average=average)
    else:
        logps = sequence_logps(model.logits(hidden), targets, where=mask, average=average)
    return logps.reshape(lead), hidden


# --------------------------------------------------------------------------- losses


def _call(objective: Objective, available: Mapping[str, Any], where: Array | None) -> Array:
    fn = losses.get(objective.name)
    names = _positional_names(fn)
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(
            f"objective {objective.name!r} needs {missing}, which the training engine cannot "
            f"provide from this batch (it provides {sorted(available)})"
        )
    return fn(*(available[n] for n in names), where=where, **objective.options)


def _reference(batch: Batch, reference_logps: Array | None) -> Array | None:
    """Precomputed ``reference_logps`` in the batch take precedence over a reference model."""
    if "reference_logps" in batch:
        return jax.lax.stop_gradient(jnp.asarray(batch["reference_logps"], jnp.float32))
    if reference_logps is not None:
        return jax.lax.stop_gradient(reference_logps)
    return None


def objective_loss(
    objective: Objective,
    policy_logps: Array,
    reference_logps: Array | None,
    batch: Batch,
    *,
    rewards: Array | None = None,
    embeddings: Array | None = None,
    prompt_weights: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """The objective's loss and its metrics from per-response log-probs (or rewards).

    Args:
      objective: the objective and its options.
      policy_logps: ``[B, 2]`` (pairwise), ``[B, K]`` (listwise) or ``[B]`` (unpaired/SFT).
      reference_logps: same shape, from a frozen reference forward pass; precomputed
        ``reference_logps`` in the batch take precedence.
      batch: the batch (masks and per-example values).
      rewards: ``[B, 2]`` reward-head outputs, for the ``reward`` family.
      embeddings: ``[B, 2, 2k]`` GPM-head embeddings, for general preference models.
      prompt_weights: ``[B, k]`` GPM prompt-dependent block weights, or None.

    Returns:
      ``(loss, metrics)``: scalar loss and a dict of scalar metrics (detached).
    """
    family = objective.family
    example_mask = jnp.asarray(batch.get("example_mask", jnp.ones(policy_logps.shape[0], bool)))
    ref = _reference(batch, reference_logps)
    if objective.needs_reference and family != "reward" and ref is None:
        raise ValueError(
            f"objective {objective.name!r} needs reference log-probs: give the step a reference "
            "model or put precomputed 'reference_logps' in the batch"
        )
    out: dict[str, Array] = {}
    beta = objective.options.get("beta", 0.1)
    if family == "sft":
        logps = policy_logps[:, 0] if policy_logps.ndim == 2 else policy_logps
        loss = _masked_mean(-logps, example_mask)
        out["logps/mean"] = -loss
    elif family == "pairwise":
        available = {
            "policy_chosen_logps": policy_logps[:, 0],
            "policy_rejected_logps": policy_logps[:, 1],
        }
        if ref is not None:
            available["reference_chosen_logps"] = ref[:, 0]
            available["reference_rejected_logps"] = ref[:, 1]
        if "strength" in batch:
            available["preference_strength"] = jnp.nan_to_num(batch["strength"], nan=1.0)
        loss = _call(objective, available, example_mask)
        out["logps/chosen"] = _masked_mean(policy_logps[:, 0], example_mask)
        out["logps/rejected"] = _masked_mean(policy_logps[:, 1], example_mask)
        out["accuracy"] = metrics.ranking_accuracy(
            policy_logps[:, 0], policy_logps[:, 1], where=example_mask
        )
        if ref is not None:
            reward_metrics = metrics.dpo_reward_metrics(
                policy_logps[:, 0],
                policy_logps[:, 1],
                ref[:, 0],
                ref[:, 1],
                beta=beta,
                where=example_mask,
            )
            out.update(reward_metrics)
            out["accuracy"] = reward_metrics["rewards/accuracies"]
            out["kl"] = _masked_mean(jnp.mean(policy_logps - ref, axis=-1), example_mask)
    elif family == "listwise":
        item_mask = jnp.asarray(batch.get("item_mask", jnp.ones(policy_logps.shape, bool)))
        item_mask = item_mask & example_mask[:, None]
        if "scores" in batch:
            labels = jnp.nan_to_num(batch["scores"], nan=0.0)
        elif "ranks" in batch:
            labels = -jnp.asarray(batch["ranks"], jnp.float32)
        else:
            raise ValueError("listwise objectives need 'scores' or 'ranks' in the batch")
        options = dict(objective.options)
        beta = options.pop("beta", 0.1)
        scores = losses.logratio_scores(policy_logps, ref, beta=beta, where=item_mask)
        available = {
            "scores": scores,
            "labels": labels,
            "policy_scores": policy_logps,
            "rewards": labels,
        }
        loss = _call(dataclasses.replace(objective, options=options), available, item_mask)
        best = jnp.argmax(jnp.where(item_mask, labels, -jnp.inf), axis=-1)
        top = jnp.argmax(jnp.where(item_mask, scores, -jnp.inf), axis=-1)
        out["accuracy"] = _masked_mean((best == top).astype(jnp.float32), example_mask)
    elif family == "unpaired":
        if ref is None:
            raise ValueError(f"objective {objective.name!r} needs reference log-probs")
        z0 = losses.kto_reference_point(policy_logps, ref, where=example_mask)
        available = {
            "policy_logps": policy_logps,
            "reference_logps": ref,
            "desirable": jnp.asarray(batch["desirable"], bool),
            "reference_point": z0,
        }
        loss = _call(objective, available, example_mask)
        out["kl"] = z0
    elif family == "reward" and embeddings is not None:
        available = {
            "chosen_embedding": embeddings[:, 0],
            "rejected_embedding": embeddings[:, 1],
        }
        if prompt_weights is not None:
            objective = dataclasses.replace(
                objective, options={**objective.options, "prompt_weights": prompt_weights}
            )
        loss = _call(objective, available, example_mask)
        score = losses.general_preference_score(
            embeddings[:, 0], embeddings[:, 1], prompt_weights=prompt_weights
        )
        out["accuracy"] = _masked_mean((score > 0).astype(jnp.float32), example_mask)
        out["score/mean"] = _masked_mean(score, example_mask)
    elif family == "reward":
        if rewards is None:
            raise ValueError(f"objective {objective.name!r} needs a reward head")
        available = {"chosen_rewards": rewards[:, 0], "rejected_rewards": rewards[:, 1]}
        if "margin" in batch and "margin" not in objective.options:
            margin = jnp.nan_to_num(batch["margin"], nan=0.0)
            if "margin" in _keyword_options(losses.get(objective.name)):
                objective = dataclasses.replace(
                    objective, options={**objective.options, "margin": margin}
                )
        if "strength" in batch:
            available["strength"] = jnp.nan_to_num(batch["strength"], nan=0.0)
        loss = _call(objective, available, example_mask)
        out["accuracy"] = metrics.reward_accuracy(rewards[:, 0], rewards[:, 1], where=example_mask)
        out["rewards/margins"] = _masked_mean(rewards[:, 0] - rewards[:, 1], example_mask)
    else:
        raise ValueError(f"family {family!r} is not trained by the offline step")
    out = {k: jax.lax.stop_gradient(v) for k, v in out.items()}
    return loss, out


def _masked_mean(x: Array, mask: Array) -> Array:
    return reduce_losses(x, where=mask, reduce_fn=jnp.mean)
