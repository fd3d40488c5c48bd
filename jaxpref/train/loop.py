"""The run: data, sharded state, compiled step, checkpoints, logging, NaN guard, summary.

:func:`train` is family-agnostic: any offline objective of the registry (plus ``"sft"``)
trains through the same loop. Re-running it with the same workdir resumes from the latest
complete checkpoint: model, optimizer, RNG and data-iterator position are restored, so the
run finishes with exactly the parameters an uninterrupted run reaches (``params_sha256`` in
``summary.json``).

Files in the workdir: ``checkpoints/`` (Orbax), ``metrics.jsonl`` (one line per step),
``tensorboard/`` (event files) and ``summary.json`` (final metrics and ``params_sha256``).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxpref import models
from jaxpref.data.batching import length_buckets
from jaxpref.data.iterator import BatchIterator
from jaxpref.data.tokenize import TokenizedExample
from jaxpref.train import sharded
from jaxpref.train.checkpointing import Checkpointer, ConfigMismatchError
from jaxpref.train.config import TrainConfig, make_optimizer, to_dict
from jaxpref.train.guards import check_finite
from jaxpref.train.hashing import params_sha256
from jaxpref.train.mesh import global_batch_from_process_local, make_mesh
from jaxpref.train.metric_logging import MetricLogger, ProgressBar, write_summary
from jaxpref.train.objectives import Objective
from jaxpref.train.step import TrainState, init_state, make_train_step, split_model

log = logging.getLogger(__name__)

#: Config fields a resumed run may change (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("num_steps", "checkpoint_every", "keep_checkpoints")

#: Metrics the NaN guard checks every step (others, e.g. empty-batch accuracies, may be NaN).
GUARDED = ("loss", "grad_norm", "finite")


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`train` returns: the final state and the summary written to disk."""

    state: TrainState
    summary: dict[str, Any]
    model_def: Any

    @property
    def model(self) -> Any:
        """The trained model (the input model's buffers were donated to the step)."""
        return self.model_def.merge(self.state.params)[0]


def _refresh_reference(alpha: float) -> Callable[[TrainState], TrainState]:
    @jax.jit
    def refresh(state: TrainState) -> TrainState:
        ref = jax.tree.map(
            lambda p, r: alpha * p + (1.0 - alpha) * r, state.params, state.reference
        )
        return state._replace(reference=ref)

    return refresh


def _guard(step_metrics: tuple[int, dict[str, float]] | None) -> None:
    if step_metrics is None:
        return
    step, values = step_metrics
    guarded = {k: v for k, v in values.items() if k in GUARDED}
    if guarded.get("finite", 1.0) != 1.0:
        guarded["finite"] = float("nan")  # the step skipped a non-finite update
    check_finite(guarded, step)


def train(
    config: TrainConfig,
    workdir: str | pathlib.Path,
    *,
    model: models.Transformer,
    examples: Sequence[TokenizedExample],
    head: Any = None,
    pad_id: int = 0,
    progress: bool = True,
    on_step: Callable[[int, TrainState], None] | None = None,
    batch_transform: Callable[[int, dict], dict] | None = None,
) -> RunResult:
    """Trains ``model`` on tokenised ``examples`` with ``config``; resumes if it can.

    Args:
      config: the run configuration (stored in every checkpoint and checked on resume).
      workdir: the run directory.
      model: the initial policy (its parameters are also the frozen reference when
        ``config.reference == "model"``). Its parameter buffers are donated to the compiled
        step: use ``RunResult.model`` afterwards, not this object.
      examples: tokenised examples of one kind (pairs, lists or unpaired).
      head: a reward head for the ``reward`` family.
      pad_id: padding token id of the batches.
      progress: show a progress bar.
      on_step: called with ``(step, state)`` after every update (e.g. evaluation hooks).
      batch_transform: ``(step, host_batch) -> host_batch`` applied before placement (e.g.
        attaching cached reference log-probs, or fault injection in tests).

    Returns:
      A :class:`RunResult` with the final state and the summary.

    Raises:
      jaxpref.train.guards.NonFiniteError: a non-finite loss or gradient; the state was not
        updated by it and the checkpoints hold the last good state.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start_time = time.perf_counter()
    objective = Objective(config.objective, config.objective_options)
    objective.validate()

    mesh = make_mesh(config.mesh_shape)
    rules = getattr(models.ShardingRules, config.sharding)()
    model = models.shard_model(model, mesh, rules)
    model_def, params = split_model(model, head)
    use_reference = config.reference == "model" and objective.needs_reference
    reference = jax.tree.map(jnp.copy, params) if use_reference else None
    optimizer, schedule = make_optimizer(config)
    state = sharded.place_state(
        init_state(params, optimizer, seed=config.seed, reference=reference), mesh
    )

    iterator = BatchIterator(
        examples,
        batch_size=config.batch_size,
        seed=config.seed,
        buckets=length_buckets(config.max_length, min_length=min(64, config.max_length)),
        pad_id=pad_id,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    checkpointer = Checkpointer(
        workdir / "checkpoints",
        save_every=config.checkpoint_every or None,
        max_to_keep=config.keep_checkpoints,
        config=to_dict(config),
    )
    start = 0
    if checkpointer.latest_step() is not None:
        restored = checkpointer.restore(state)
        changed = {
            k: v
            for k, v in restored.config_diff.items()
            if k.split(".")[0] not in RESUMABLE_CHANGES
        }
        if changed:
            checkpointer.close()
            raise ConfigMismatchError(
                f"{workdir} holds a run with a different config; use a new workdir or the "
                "same config. Differing fields: "
                + ", ".join(
                    f"{k} (checkpoint: {a!r}, now: {b!r})" for k, (a, b) in changed.items()
                ),
                fields=changed,
            )
        state, start = restored.state, restored.step
        iterator.set_state(restored.data_state)
        log.info("resumed from step %d in %s", start, workdir)

    logps_fn = sharded.sharded_logps_fn(mesh) if mesh.size > 1 else None
    step_fn = sharded.jit_step(
        make_train_step(
            model_def,
            objective,
            optimizer,
            accumulation_steps=config.accumulation_steps,
            learning_rate_fn=schedule,
            chunked=config.chunked_logps,
            logps_fn=logps_fn,
        ),
        state,
        mesh=mesh,
    )
    refresh = None
    if config.reference_refresh_every and state.reference is not None:
        refresh = _refresh_reference(config.reference_refresh_alpha)

    logger = MetricLogger(workdir, resume_step=start if start else None)
    bar = ProgressBar(config.num_steps, initial=start, disable=None if progress else True)
    last: dict[str, float] = {}
    try:
        tick = time.perf_counter()
        for step in range(start, config.num_steps):
            local = next(iterator)
            if batch_transform is not None:
                local = batch_transform(step, local)
            if jax.process_count() > 1:
                batch = global_batch_from_process_local(local, mesh)
            else:
                batch = sharded.place_batch(local, mesh)
            state, metrics = step_fn(state, batch)
            if refresh is not None and (step + 1) % config.reference_refresh_every == 0:
                state = refresh(state)
            now = time.perf_counter()
            metrics = {**metrics, "step_time": now - tick}
            tick = now
            previous = logger.log(step + 1, metrics)
            _guard(previous)
            if previous is not None:
                last = previous[1]
                tokens = last.get("tokens", 0.0)
                if last.get("step_time"):
                    last["tokens_per_second"] = tokens / last["step_time"]
                bar.update(previous[0], last, num_examples=config.batch_size)
            if on_step is not None:
                on_step(step + 1, state)
            if checkpointer.should_save(step + 1):
                _guard(logger.flush())  # never save past an unchecked step
                checkpointer.save(step + 1, state, data_state=iterator.get_state())
        final = logger.flush()
        _guard(final)
        if final is not None:
            last = final[1]
            bar.update(final[0], last)
        checkpointer.save(config.num_steps, state, data_state=iterator.get_state(), force=True)
        checkpointer.wait()
    finally:
        bar.close()
        logger.close()
        checkpointer.close()

    summary = {
        "objective": config.objective,
        "steps": int(state.step),
        "resumed_from": start,
        "final_metrics": last,
        "params_sha256": params_sha256(state.params),
        "seconds": time.perf_counter() - start_time,
        "devices": jax.device_count(),
        "mesh_shape": list(mesh.devices.shape),
    }
    write_summary(workdir, summary)
    return RunResult(state=state, summary=summary, model_def=model_def)
