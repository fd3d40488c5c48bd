"""The run configuration, its optimizer, and ``--set key=value`` overrides.

One frozen dataclass holds everything that changes a run's numbers; it is stored in every
checkpoint, so a resumed run can check it is the same run. Experiments embed it in their own
config and expose every field on the command line as ``--set train.learning_rate=3e-4``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optax

SCHEDULES = ("constant", "cosine", "linear")
REFERENCES = ("model", "precomputed", "none")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train: objective, optimizer, batch, mesh, checkpoints, reference handling.

    Attributes:
      objective: registered objective name (``jaxpref.losses.available()``) or ``"sft"``.
      objective_options: keyword options of the objective, e.g. ``{"beta": 0.1}``.
      learning_rate: peak learning rate.
      schedule: ``constant``, ``cosine`` (to 10% of peak) or ``linear`` (to 0) after warmup.
      warmup_steps: linear warmup from 0.
      weight_decay: AdamW weight decay.
      adam_b1, adam_b2, adam_eps: AdamW moments.
      max_grad_norm: global-norm gradient clipping (None: off).
      batch_size: global batch (examples, i.e. pairs or lists).
      accumulation_steps: microbatches per update (``batch_size`` must divide).
      num_steps: total updates.
      seed: data order and RNG.
      mesh_shape: ``(data, fsdp, tensor)``; one entry may be -1 (the rest of the devices).
      sharding: ``data_parallel``, ``fsdp`` or ``fsdp_tensor`` logical-axis rules.
      checkpoint_every: save every N steps (and at the end); 0 saves only at the end.
      keep_checkpoints: how many checkpoints to keep.
      reference: ``model`` (a frozen copy of the initial policy in the state, run in the same
        compiled step), ``precomputed`` (``reference_logps`` in the batches), or ``none``.
      reference_refresh_every: TR-DPO: every N steps set the reference to
        ``α·policy + (1-α)·reference`` (0: never).
      reference_refresh_alpha: TR-DPO's ``α`` (1.0 = hard update).
      chunked_logps: log-probs from hidden states without the logits tensor.
      max_length: the longest tokenised sequence (length buckets up to it).
    """

    objective: str = "dpo"
    objective_options: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"beta": 0.1})
    learning_rate: float = 1e-4
    schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    batch_size: int = 8
    accumulation_steps: int = 1
    num_steps: int = 100
    seed: int = 0
    mesh_shape: tuple[int, int, int] = (-1, 1, 1)
    sharding: str = "fsdp_tensor"
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    reference: str = "model"
    reference_refresh_every: int = 0
    reference_refresh_alpha: float = 1.0
    chunked_logps: bool = True
    max_length: int = 256

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.batch_size % self.accumulation_steps:
            raise ValueError(
                f"batch_size={self.batch_size} is not divisible by "
                f"accumulation_steps={self.accumulation_steps}"
            )
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        object.__setattr__(self, "mesh_shape", tuple(self.mesh_shape))
        object.__setattr__(self, "objective_options", dict(self.objective_options))


def learning_rate_schedule(config: TrainConfig) -> Callable[[Any], Any]:
    """The optax schedule of ``config`` (warmup then constant/cosine/linear)."""
    peak, warmup = config.learning_rate, config.warmup_steps
    decay_steps = max(config.num_steps - warmup, 1)
    if config.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif config.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=0.1)
    else:
        after = optax.linear_schedule(peak, 0.0, decay_steps)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(config: TrainConfig) -> tuple[optax.GradientTransformation, Callable]:
    """AdamW with the schedule, optional clipping; returns ``(optimizer, schedule)``."""
    schedule = learning_rate_schedule(config)
    parts = []
    if config.max_grad_norm is not None:
        parts.append(optax.clip_by_global_norm(config.max_grad_norm))
    parts.append(
        optax.adamw(
            schedule,
            b1=config.adam_b1,
            b2=config.adam_b2,
            eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
    )
    return optax.chain(*parts), schedule


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a (nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """Applies ``key=value`` overrides (dotted keys into nested dataclasses and dicts).

    Values are Python literals (``3e-4``, ``(2, 4, 1)``, ``{'beta': 0.5}``, ``True``) or bare
    strings. An unknown key raises ValueError listing the valid ones.

    >>> apply_overrides(TrainConfig(), ["learning_rate=3e-4", "objective_options.beta=0.5"])
    ... # doctest: +ELLIPSIS
    TrainConfig(objective='dpo', objective_options={'beta': 0.5}, learning_rate=0.0003, ...)
    """
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        parsed.append((key.strip(), key.strip().split("."), _parse_value(text.strip())))
    return _apply(config, parsed)


def _apply(obj: Any, items: list[tuple[str, list[str], Any]]) -> Any:
    """Applies all overrides of one level at once, so cross-field checks see the final values."""
    groups: dict[str, list[tuple[str, list[str], Any]]] = {}
    direct: dict[str, Any] = {}
    for full_key, path, value in items:
        if len(path) == 1:
            direct[path[0]] = (full_key, value)
        else:
            groups.setdefault(path[0], []).append((full_key, path[1:], value))
    if dataclasses.is_dataclass(obj):
        names = [f.name for f in dataclasses.fields(obj)]
        for head, (full_key, _) in {
            **direct,
            **{h: (g[0][0], None) for h, g in groups.items()},
        }.items():
            if head not in names:
                raise ValueError(f"unknown config key {full_key!r}; valid keys here: {names}")
        changes = {head: value for head, (_, value) in direct.items()}
        for head, sub in groups.items():
            changes[head] = _apply(changes.get(head, getattr(obj, head)), sub)
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, Mapping):
        new = dict(obj)
        for head, (_, value) in direct.items():
            new[head] = value
        for head, sub in groups.items():
            if head not in new:
                raise ValueError(f"unknown config key {sub[0][0]!r}; valid keys: {sorted(new)}")
            new[head] = _apply(new[head], sub)
        return new
    full_key = items[0][0]
    raise ValueError(f"config key {full_key!r} goes into a {type(obj).__name__}, not a config")
