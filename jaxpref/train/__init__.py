"""The training engine: config, pure update steps, sharding, the run loop, and infrastructure.

:func:`train` runs any offline objective (:class:`TrainConfig`); :func:`make_train_step`
builds the pure ``(state, batch) -> (state, metrics)`` step it compiles with
:func:`jit_step`; :mod:`~jaxpref.train.objectives` is the one module that knows the
objective families.

Meshes and multi-host batches (:mod:`~jaxpref.train.mesh`), Orbax checkpoints with resume
(:mod:`~jaxpref.train.checkpointing`), metric files, TensorBoard and the progress bar
(:mod:`~jaxpref.train.metric_logging`), a content hash of the parameters
(:mod:`~jaxpref.train.hashing`) and non-finite guards (:mod:`~jaxpref.train.guards`).
Importing it has no side effects.
"""

from jaxpref.train.checkpointing import Checkpointer as Checkpointer
from jaxpref.train.checkpointing import ConfigMismatchError as ConfigMismatchError
from jaxpref.train.checkpointing import Restored as Restored
from jaxpref.train.config import TrainConfig as TrainConfig
from jaxpref.train.config import apply_overrides as apply_overrides
from jaxpref.train.config import learning_rate_schedule as learning_rate_schedule
from jaxpref.train.config import make_optimizer as make_optimizer
from jaxpref.train.guards import NonFiniteError as NonFiniteError
from jaxpref.train.guards import all_finite as all_finite
from jaxpref.train.guards import check_finite as check_finite
from jaxpref.train.hashing import params_sha256 as params_sha256
from jaxpref.train.loop import RunResult as RunResult
from jaxpref.train.loop import train as train
from jaxpref.train.mesh import BATCH_AXES as BATCH_AXES
from jaxpref.train.mesh import MESH_AXES as MESH_AXES
from jaxpref.train.mesh import batch_sharding as batch_sharding
from jaxpref.train.mesh import global_batch_from_process_local as global_batch_from_process_local
from jaxpref.train.mesh import make_mesh as make_mesh
from jaxpref.train.mesh import maybe_initialize_distributed as maybe_initialize_distributed
from jaxpref.train.metric_logging import MetricLogger as MetricLogger
from jaxpref.train.metric_logging import ProgressBar as ProgressBar
from jaxpref.train.metric_logging import read_metrics as read_metrics
from jaxpref.train.metric_logging import write_summary as write_summary
from jaxpref.train.objectives import Objective as Objective
from jaxpref.train.objectives import objective_loss as objective_loss
from jaxpref.train.objectives import response_logps as response_logps
from jaxpref.train.onpolicy import ADVANTAGES as ADVANTAGES
from jaxpref.train.onpolicy import ONPOLICY_FAMILIES as ONPOLICY_FAMILIES
from jaxpref.train.onpolicy import Rollout as Rollout
from jaxpref.train.onpolicy import bradley_terry_preference_fn as bradley_terry_preference_fn
from jaxpref.train.onpolicy import make_onpolicy_step as make_onpolicy_step
from jaxpref.train.sharded import jit_step as jit_step
from jaxpref.train.sharded import place_batch as place_batch
from jaxpref.train.sharded import place_state as place_state
from jaxpref.train.sharded import sharded_logps_fn as sharded_logps_fn
from jaxpref.train.step import ModelDef as ModelDef
from jaxpref.train.step import TrainState as TrainState
from jaxpref.train.step import init_state as init_state
from jaxpref.train.step import make_loss_fn as make_loss_fn
from jaxpref.train.step import make_train_step as make_train_step
from jaxpref.train.step import split_model as split_model
from jaxpref.train.step import start_next_round as start_next_round
from jaxpref.train.sweep import init_sweep_state as init_sweep_state
from jaxpref.train.sweep import make_sweep_step as make_sweep_step
from jaxpref.train.sweep import member_labels as member_labels
from jaxpref.train.sweep import member_metrics as member_metrics
from jaxpref.train.sweep import stack_states as stack_states
from jaxpref.train.sweep import sweep_objectives as sweep_objectives
from jaxpref.train.sweep import unstack_state as unstack_state
from jaxpref.train.synthetic import synthetic_pairs as synthetic_pairs

__all__ = [
    "ADVANTAGES",
    "BATCH_AXES",
    "MESH_AXES",
    "ONPOLICY_FAMILIES",
    "Checkpointer",
    "ConfigMismatchError",
    "MetricLogger",
    "ModelDef",
    "NonFiniteError",
    "Objective",
    "ProgressBar",
    "Restored",
    "Rollout",
    "RunResult",
    "TrainConfig",
    "TrainState",
    "all_finite",
    "apply_overrides",
    "batch_sharding",
    "bradley_terry_preference_fn",
    "check_finite",
    "global_batch_from_process_local",
    "init_state",
    "init_sweep_state",
    "jit_step",
    "learning_rate_schedule",
    "make_loss_fn",
    "make_mesh",
    "make_onpolicy_step",
    "make_optimizer",
    "make_sweep_step",
    "make_train_step",
    "maybe_initialize_distributed",
    "member_labels",
    "member_metrics",
    "objective_loss",
    "params_sha256",
    "place_batch",
    "place_state",
    "read_metrics",
    "response_logps",
    "sharded_logps_fn",
    "split_model",
    "stack_states",
    "start_next_round",
    "sweep_objectives",
    "synthetic_pairs",
    "train",
    "unstack_state",
    "write_summary",
]
