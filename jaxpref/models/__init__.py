"""Llama-family decoder models in Flax NNX: config, model, heads, sharding, checkpoints, sampling.

* :class:`TransformerConfig` (frozen; ``tiny()``, ``llama3_2_1b()``, ..., ``from_hf(path)``)
  and :class:`Transformer` (logits, ``hidden_states``, ``unembedding``).
* :func:`from_pretrained` / :func:`save_pretrained`: Hugging Face safetensors checkpoints
  (single or index-sharded; ``.gguf`` through :mod:`jaxpref.models.gguf`), placed directly
  on a mesh with :class:`ShardingRules`.
* :class:`RewardHead`, :class:`ValueHead`, :class:`GPMHead` on any backbone's hidden states.
* :func:`generate`: jit-compiled KV-cache sampling.

Importing this package has no side effects; ``safetensors`` and the GGUF reader are imported
only when used.
"""

from jaxpref.models.attention import KVCache as KVCache
from jaxpref.models.checkpoints import CheckpointError as CheckpointError
from jaxpref.models.checkpoints import from_pretrained as from_pretrained
from jaxpref.models.checkpoints import load_from_source as load_from_source
from jaxpref.models.checkpoints import save_pretrained as save_pretrained
from jaxpref.models.checkpoints import tensor_names as tensor_names
from jaxpref.models.config import REMAT_POLICIES as REMAT_POLICIES
from jaxpref.models.config import SUPPORTED_ARCHITECTURES as SUPPORTED_ARCHITECTURES
from jaxpref.models.config import RopeScaling as RopeScaling
from jaxpref.models.config import TransformerConfig as TransformerConfig
from jaxpref.models.config import parameter_count as parameter_count
from jaxpref.models.heads import GPMHead as GPMHead
from jaxpref.models.heads import GPMOutput as GPMOutput
from jaxpref.models.heads import RewardHead as RewardHead
from jaxpref.models.heads import ValueHead as ValueHead
from jaxpref.models.heads import gather_last as gather_last
from jaxpref.models.heads import last_token_index as last_token_index
from jaxpref.models.sampling import Generation as Generation
from jaxpref.models.sampling import generate as generate
from jaxpref.models.sharding import LOGICAL_AXES as LOGICAL_AXES
from jaxpref.models.sharding import MESH_AXES as MESH_AXES
from jaxpref.models.sharding import ShardingRules as ShardingRules
from jaxpref.models.sharding import create_sharded as create_sharded
from jaxpref.models.sharding import logical_axes as logical_axes
from jaxpref.models.sharding import make_mesh as make_mesh
from jaxpref.models.sharding import named_shardings as named_shardings
from jaxpref.models.sharding import partition_specs as partition_specs
from jaxpref.models.sharding import shard_model as shard_model
from jaxpref.models.transformer import Transformer as Transformer
from jaxpref.models.transformer import default_positions as default_positions

__all__ = [
    "LOGICAL_AXES",
    "MESH_AXES",
    "REMAT_POLICIES",
    "SUPPORTED_ARCHITECTURES",
    "CheckpointError",
    "GPMHead",
    "GPMOutput",
    "Generation",
    "KVCache",
    "RewardHead",
    "RopeScaling",
    "ShardingRules",
    "Transformer",
    "TransformerConfig",
    "ValueHead",
    "create_sharded",
    "default_positions",
    "from_pretrained",
    "gather_last",
    "generate",
    "last_token_index",
    "load_from_source",
    "logical_axes",
    "make_mesh",
    "named_shardings",
    "parameter_count",
    "partition_specs",
    "save_pretrained",
    "shard_model",
    "tensor_names",
]
