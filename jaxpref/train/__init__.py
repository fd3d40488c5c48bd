"""The training engine's family-agnostic infrastructure.

Meshes and multi-host batches (:mod:`~jaxpref.train.mesh`), Orbax checkpoints with resume
(:mod:`~jaxpref.train.checkpointing`), metric files, TensorBoard and the progress bar
(:mod:`~jaxpref.train.metric_logging`), a content hash of the parameters
(:mod:`~jaxpref.train.hashing`) and non-finite guards (:mod:`~jaxpref.train.guards`).
Importing it has no side effects.
"""

from jaxpref.train.checkpointing import Checkpointer as Checkpointer
from jaxpref.train.checkpointing import ConfigMismatchError as ConfigMismatchError
from jaxpref.train.checkpointing import Restored as Restored
from jaxpref.train.guards import NonFiniteError as NonFiniteError
from jaxpref.train.guards import all_finite as all_finite
from jaxpref.train.guards import check_finite as check_finite
from jaxpref.train.hashing import params_sha256 as params_sha256
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

__all__ = [
    "BATCH_AXES",
    "MESH_AXES",
    "Checkpointer",
    "ConfigMismatchError",
    "MetricLogger",
    "NonFiniteError",
    "ProgressBar",
    "Restored",
    "all_finite",
    "batch_sharding",
    "check_finite",
    "global_batch_from_process_local",
    "make_mesh",
    "maybe_initialize_distributed",
    "params_sha256",
    "read_metrics",
    "write_summary",
]
