"""Train state and the offline update-step factory: pure ``(state, batch) -> (state, metrics)``.

The step is family-agnostic: :mod:`jaxpref.train.objectives` turns model outputs into the
objective's arrays. The reference model is either a frozen copy of the parameters inside the
state (run in the same compiled program under ``stop_gradient``) or precomputed log-probs in
the batch (``reference_logps``); the step is the same function either way.

A non-finite loss or gradient does not touch the parameters or optimizer state: the step
returns the old state with ``metrics["finite"] = 0`` so the loop can stop with the last good
state intact (see :class:`jaxpref.train.guards.NonFiniteError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxpref.models import heads as models_heads
from jaxpref.train.guards import all_finite
from jaxpref.train.objectives import Objective, objective_loss, response_logps

Array = jax.Array
Batch = Mapping[str, Array]


class TrainState(NamedTuple):
    """Everything a run needs to continue bit-identically: a pytree.

    Attributes:
      step: int32 scalar, the number of updates applied.
      params: trainable parameters (``{"model": nnx.State[, "head": nnx.State]}``).
      opt_state: the optax state.
      rng: a raw ``uint32`` PRNG key (``jax.random.key_data``), for sampling steps.
      reference: frozen reference parameters (same structure as ``params``) or None when
        reference log-probs come precomputed with the batches.
    """

    step: Array
    params: Any
    opt_state: Any
    rng: Array
    reference: Any = None


@dataclasses.dataclass(frozen=True)
class ModelDef:
    """The static half of an NNX model (graph definitions), to rebuild it from parameters."""

    model_graph: Any
    model_rest: Any
    head_graph: Any = None
    head_rest: Any = None

    def merge(self, params: Mapping[str, Any]) -> tuple[Any, Any]:
        model = nnx.merge(self.model_graph, params["model"], self.model_rest)
        head = None
        if self.head_graph is not None:
            head = nnx.merge(self.head_graph, params["head"], self.head_rest)
        return model, head


def split_model(model: nnx.Module, head: nnx.Module | None = None) -> tuple[ModelDef, dict]:
    """Splits a model (and optional head) into a :class:`ModelDef` and a parameter pytree."""
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    tree = {"model": params}
    head_graph = head_rest = None
    if head is not None:
        head_graph, head_params, head_rest = nnx.split(head, nnx.Param, ...)
        tree["head"] = head_params
    return ModelDef(graph, rest, head_graph, head_rest), tree


def init_state(
    params: Any,
    optimizer: optax.GradientTransformation,
    *,
    seed: int = 0,
    reference: Any = None,
) -> TrainState:
    """A fresh state; the optimizer state inherits the parameters' shardings (GSPMD)."""
    opt_state = jax.jit(optimizer.init)(params)
    rng = jax.random.key_data(jax.random.key(seed))
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, rng, reference)


def _tokens(batch: Batch) -> Array:
    return jnp.sum(jnp.asarray(batch["loss_mask"], jnp.int32))


def make_loss_fn(
    model_def: ModelDef,
    objective: Objective,
    *,
    chunked: bool = True,
    logps_fn: Callable[..., Array] | None = None,
) -> Callable[[Any, Any, Batch], tuple[Array, dict[str, Array]]]:
    """``loss_fn(params, reference, batch) -> (loss, metrics)`` for one (micro)batch."""
    objective.validate()
    family = objective.family

    def loss_fn(params: Any, reference: Any, batch: Batch):
        model, head = model_def.merge(params)
        if family == "reward":
            if head is None:
                raise ValueError(f"objective {objective.name!r} needs a reward (or GPM) head")
            return _reward_loss(model, head, objective, batch)
        logps, _ = response_logps(
            model, batch, average=objective.average_logps, chunked=chunked, logps_fn=logps_fn
        )
        ref_logps = None
        if reference is not None and objective.needs_reference and "reference_logps" not in batch:
            ref_model, _ = model_def.merge(reference)
            ref_logps, _ = response_logps(
                ref_model,
                batch,
                average=objective.average_logps,
                chunked=chunked,
                logps_fn=logps_fn,
            )
            ref_logps = jax.lax.stop_gradient(ref_logps)
        return objective_loss(objective, logps, ref_logps, batch)

    return loss_fn


def start_next_round(state: TrainState) -> TrainState:
    """Iterative rounds: the trained policy becomes the frozen reference of the next round.

    The step counter and optimizer state carry on; reset them by building a fresh state with
    :func:`init_state` and ``reference=state.params`` if a round should start from scratch.
    """
    return state._replace(reference=jax.tree.map(jnp.copy, state.params))


def _prompt_mask(batch: Batch) -> Array:
    """True at prompt tokens: real inputs before the first response token."""
    # loss_mask[t] marks target t, i.e. input token t + 1, as a response token.
    response_inputs = jnp.pad(
        batch["loss_mask"][..., :-1], [(0, 0)] * (batch["loss_mask"].ndim - 1) + [(1, 0)]
    )
    seen_response = jnp.cumsum(response_inputs, axis=-1) > 0
    return batch["attention_mask"] & ~seen_response


def _reward_loss(model: Any, head: Any, objective: Objective, batch: Batch):
    """Reward (scalar head) or general-preference (GPM embedding head) model losses."""
    ids = batch["input_ids"]
    lead = ids.shape[:-1]

    def flat(x: Array) -> Array:
        return x.reshape((-1, x.shape[-1]))

    attention = flat(batch["attention_mask"])
    hidden = model.hidden_states(
        flat(ids), attention_mask=attention, positions=flat(batch["positions"])
    )
    if isinstance(head, models_heads.GPMHead):
        prompt_mask = flat(_prompt_mask(batch)) if head.prompt_kernel is not None else None
        out = head(hidden, attention, prompt_mask=prompt_mask)
        embeddings = out.embedding.reshape((*lead, -1))
        weights = None
        if out.prompt_weights is not None:
            weights = out.prompt_weights.reshape((*lead, -1))[:, 0]  # same prompt: chosen's
        return objective_loss(
            objective, embeddings, None, batch, embeddings=embeddings, prompt_weights=weights
        )
    rewards = head(hidden, attention).reshape(lead)
    return objective_loss(objective, rewards, None, batch, rewards=rewards)


def _split_micro(batch: Batch, steps: int) -> Batch:
    def split(x):
        x = jnp.asarray(x)
        if x.shape[0] % steps:
            raise ValueError(
                f"batch size {x.shape[0]} is not divisible by accumulation_steps={steps}"
            )
        return x.reshape((steps, x.shape[0] // steps, *x.shape[1:]))

    return {k: split(v) for k, v in batch.items()}


def make_train_step(
    model_def: ModelDef,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    *,
    accumulation_steps: int = 1,
    learning_rate_fn: Callable[[Array], Array] | None = None,
    chunked: bool = True,
    logps_fn: Callable[..., Array] | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, Array]]]:
    """Builds the pure offline update step.

    Args:
      model_def: from :func:`split_model`.
      objective: the registered objective and its options.
      optimizer: any optax transformation (clipping, schedules, ``MultiSteps``...).
      accumulation_steps: split the batch into this many microbatches, run them in a
        ``lax.scan`` and average their gradients before one update (memory / batch size).
      learning_rate_fn: the schedule, only to report ``learning_rate`` in the metrics.
      chunked: log-probs from hidden states without the logits tensor.
      logps_fn: override of the chunked log-prob function (e.g. ``shard_map``-ped).

    Returns:
      ``step(state, batch) -> (state, metrics)``, pure; jit it with shardings
      (:func:`jaxpref.train.sharded.jit_step`).
    """
    loss_fn = make_loss_fn(model_def, objective, chunked=chunked, logps_fn=logps_fn)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
        if accumulation_steps == 1:
            (loss, aux), grads = grad_fn(state.params, state.reference, batch)
        else:
            micro = _split_micro(batch, accumulation_steps)
            first = jax.tree.map(lambda x: x[0], micro)
            shapes = jax.eval_shape(grad_fn, state.params, state.reference, first)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

            def body(carry, mb):
                out = grad_fn(state.params, state.reference, mb)
                return jax.tree.map(jnp.add, carry, out), None

            ((loss, aux), grads), _ = jax.lax.scan(body, zeros, micro)
            scale = 1.0 / accumulation_steps
            loss, aux, grads = jax.tree.map(lambda x: x * scale, (loss, aux, grads))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = all_finite((loss, grads))
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = state._replace(
            step=state.step + finite.astype(jnp.int32),
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
        )
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "tokens": _tokens(batch),
            "finite": finite.astype(jnp.float32),
            **aux,
        }
        if learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
        return new_state, metrics

    return step
