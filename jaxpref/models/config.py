"""The decoder configuration: a frozen dataclass, presets, and Hugging Face ``config.json`` I/O.

One :class:`TransformerConfig` describes every supported member of the Llama family as
Hugging Face defines it. The architecture-specific differences are few and are derived from
``architecture`` (the Hugging Face ``model_type``) and the same flags Hugging Face uses:

============  ==============================  ===========================================
``model_type``  covers                          differences from Llama
============  ==============================  ===========================================
``llama``     Llama 2, Llama 3.x, SmolLM2      ``attention_bias`` (q, k, v, o), ``mlp_bias``
``mistral``   Mistral                         ``sliding_window`` on every layer
``qwen2``     Qwen2, Qwen2.5                  bias on q, k, v (never o); optional sliding window
``qwen3``     Qwen3                           RMSNorm on q and k per head; ``attention_bias``
============  ==============================  ===========================================

Numerics options that are not part of a checkpoint (``dtype``, ``remat``) are fields too, so
that a model is fully described by its config.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "REMAT_POLICIES",
    "SUPPORTED_ARCHITECTURES",
    "RopeScaling",
    "TransformerConfig",
    "parameter_count",
]

#: Hugging Face ``model_type`` -> the ``*ForCausalLM`` class written to ``architectures``.
SUPPORTED_ARCHITECTURES: Mapping[str, str] = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}

#: ``config.remat`` -> the :func:`jax.checkpoint` policy applied to each decoder layer.
#: ``"none"`` keeps every activation; ``"full"`` saves only each layer's input and
#: recomputes the rest in the backward pass; ``"dots"`` saves matmul outputs;
#: ``"dots_with_no_batch_dims"`` saves matmul outputs without batch dimensions (weights-only
#: contractions, e.g. projections, but not attention scores).
REMAT_POLICIES: Mapping[str, Any] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling (Hugging Face ``rope_parameters`` without ``rope_theta``).

    Attributes:
      rope_type: ``"linear"`` (every inverse frequency divided by ``factor``) or ``"llama3"``
        (Llama 3.1: low frequencies divided by ``factor``, high frequencies kept, a smooth
        interpolation between the two wavelength thresholds).
      factor: the scaling factor.
      low_freq_factor: Llama 3 only; ``original_max_position_embeddings / low_freq_factor``
        is the wavelength above which frequencies are fully scaled.
      high_freq_factor: Llama 3 only; wavelengths below
        ``original_max_position_embeddings / high_freq_factor`` are not scaled.
      original_max_position_embeddings: Llama 3 only; the pre-training context length.
    """

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.rope_type not in ("linear", "llama3"):
            raise ValueError(
                f"Unsupported RoPE scaling type {self.rope_type!r}; supported: 'linear', 'llama3'."
            )
        if self.factor <= 0:
            raise ValueError(f"RoPE scaling factor must be positive, got {self.factor}.")
        if self.rope_type == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise ValueError(
                "llama3 RoPE scaling needs high_freq_factor > low_freq_factor, got "
                f"{self.high_freq_factor} and {self.low_freq_factor}."
            )


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """A decoder-only transformer of the Llama family (frozen, hashable).

    Attributes:
      vocab_size: number of token ids.
      d_model: hidden size (Hugging Face ``hidden_size``).
      num_layers: decoder layers (``num_hidden_layers``).
      num_heads: query heads (``num_attention_heads``).
      num_kv_heads: key/value heads for grouped-query attention; divides ``num_heads``.
      mlp_dim: SwiGLU hidden size (``intermediate_size``).
      head_dim: per-head size; None means ``d_model // num_heads``.
      architecture: Hugging Face ``model_type``, one of :data:`SUPPORTED_ARCHITECTURES`.
      rms_norm_eps: RMSNorm epsilon.
      rope_theta: RoPE base.
      rope_scaling: optional :class:`RopeScaling`.
      max_position_embeddings: context length recorded in the config (informational: RoPE
        does not need it and positions beyond it are not rejected).
      tie_embeddings: the output projection is the transposed input embedding.
      attention_bias: bias on the q, k, v and o projections (``llama``, ``qwen3``). Must be
        False for ``qwen2`` (which always has q, k, v biases and never an o bias) and
        ``mistral`` (no biases).
      mlp_bias: bias on the three MLP projections (``llama`` only).
      sliding_window: attention window in tokens (a query attends to keys at most
        ``sliding_window - 1`` positions back), or None for full attention.
      layer_types: per-layer ``"full_attention"`` / ``"sliding_attention"``; None means
        every layer uses ``sliding_window`` (when set).
      bos_token_id, eos_token_id, pad_token_id: special ids from the checkpoint (eos may be a
        tuple). Used as defaults by :func:`jaxpref.models.generate` and written back by
        :func:`jaxpref.models.save_pretrained`.
      param_dtype: dtype the parameters are stored in.
      dtype: compute dtype (activations and matmul inputs); None means ``param_dtype``.
        ``param_dtype=float32, dtype=bfloat16`` is mixed precision: float32 master
        weights, bfloat16 compute. Softmax, RMSNorm statistics, RoPE angles and logits are
        always float32.
      remat: rematerialisation policy per decoder layer, a key of :data:`REMAT_POLICIES`.
      initializer_range: standard deviation of the random normal initialisation.

    Example:
      >>> from jaxpref.models import TransformerConfig
      >>> config = TransformerConfig.tiny()
      >>> config.d_model, config.num_heads, config.num_kv_heads, config.head_dim
      (64, 4, 2, 16)
      >>> TransformerConfig.tiny(remat="full").remat
      'full'
    """

    vocab_size: int
    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    mlp_dim: int
    head_dim: int | None = None
    architecture: str = "llama"
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    param_dtype: Any = jnp.float32
    dtype: Any = None
    remat: str = "none"
    initializer_range: float = 0.02

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        if self.head_dim is None:
            if self.d_model % self.num_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}; "
                    "set head_dim explicitly."
                )
            set_("head_dim", self.d_model // self.num_heads)
        set_("param_dtype", jnp.dtype(self.param_dtype))
        if self.dtype is not None:
            set_("dtype", jnp.dtype(self.dtype))
        if isinstance(self.eos_token_id, list):
            set_("eos_token_id", tuple(self.eos_token_id))
        if isinstance(self.layer_types, list):
            set_("layer_types", tuple(self.layer_types))
        if isinstance(self.rope_scaling, Mapping):
            set_("rope_scaling", RopeScaling(**self.rope_scaling))
        self._validate()

    def _validate(self):
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "mlp_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must be a multiple of num_kv_heads="
                f"{self.num_kv_heads} (grouped-query attention)."
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}.")
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise ValueError(_unsupported_message(self.architecture))
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat must be one of {sorted(REMAT_POLICIES)}, got {self.remat!r}.")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"sliding_window must be positive or None, got {self.sliding_window}.")
        if self.layer_types is not None:
            if len(self.layer_types) != self.num_layers:
                raise ValueError(
                    f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers."
                )
            bad = sorted(set(self.layer_types) - set(_LAYER_TYPES))
            if bad:
                raise ValueError(f"Unknown layer_types {bad}; supported: {list(_LAYER_TYPES)}.")
        arch = self.architecture
        if arch in ("mistral", "qwen2") and self.attention_bias:
            raise ValueError(f"{arch} has no attention_bias flag; it must be False.")
        if arch != "llama" and self.mlp_bias:
            raise ValueError(f"mlp_bias is only supported for 'llama', not {arch!r}.")
        if arch == "llama" and (self.sliding_window is not None or self.layer_types is not None):
            raise ValueError("'llama' has no sliding-window attention; use 'mistral' or 'qwen2'.")

    # Derived properties -------------------------------------------------------------------

    @property
    def compute_dtype(self) -> jnp.dtype:
        """The dtype activations are computed in (``dtype``, else ``param_dtype``)."""
        return self.param_dtype if self.dtype is None else self.dtype

    @property
    def qkv_bias(self) -> bool:
        """Whether the q, k, v projections have a bias (always for Qwen2)."""
        return self.attention_bias or self.architecture == "qwen2"

    @property
    def out_bias(self) -> bool:
        """Whether the attention output projection has a bias."""
        return self.attention_bias

    @property
    def qk_norm(self) -> bool:
        """Whether q and k are RMS-normalised per head before RoPE (Qwen3)."""
        return self.architecture == "qwen3"

    @property
    def layer_windows(self) -> tuple[int | None, ...]:
        """The attention window of each layer (None: full causal attention)."""
        if self.sliding_window is None:
            return (None,) * self.num_layers
        if self.layer_types is None:
            return (self.sliding_window,) * self.num_layers
        return tuple(
            self.sliding_window if kind == "sliding_attention" else None
            for kind in self.layer_types
        )

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        """``eos_token_id`` as a tuple (empty when unset)."""
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    def replace(self, **changes: Any) -> TransformerConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # Presets ------------------------------------------------------------------------------

    @classmethod
    def tiny(cls, **overrides: Any) -> TransformerConfig:
        """A 2-layer Llama-style model for tests: d_model 64, 4 heads, 2 KV heads, vocab 128."""
        base = dict(
            vocab_size=128,
            d_model=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            mlp_dim=128,
            max_position_embeddings=256,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def smollm2_135m(cls, **overrides: Any) -> TransformerConfig:
        """SmolLM2-135M shapes (``HuggingFaceTB/SmolLM2-135M``): 30 layers, tied, 134.5M."""
        base = dict(
            vocab_size=49152,
            d_model=576,
            num_layers=30,
            num_heads=9,
            num_kv_heads=3,
            mlp_dim=1536,
            rope_theta=100000.0,
            max_position_embeddings=8192,
            tie_embeddings=True,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def llama3_2_1b(cls, **overrides: Any) -> TransformerConfig:
        """Llama-3.2-1B shapes: 16 layers, d_model 2048, tied embeddings, 1.24B parameters."""
        base = dict(
            vocab_size=128256,
            d_model=2048,
            num_layers=16,
            num_heads=32,
            num_kv_heads=8,
            head_dim=64,
            mlp_dim=8192,
            rope_theta=500000.0,
            rope_scaling=RopeScaling("llama3", 32.0, 1.0, 4.0, 8192),
            max_position_embeddings=131072,
            tie_embeddings=True,
            bos_token_id=128000,
            eos_token_id=128001,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def llama3_1_8b(cls, **overrides: Any) -> TransformerConfig:
        """Llama-3.1-8B shapes: 32 layers, d_model 4096, untied embeddings, 8.03B parameters."""
        base = dict(
            vocab_size=128256,
            d_model=4096,
            num_layers=32,
            num_heads=32,
            num_kv_heads=8,
            mlp_dim=14336,
            rope_theta=500000.0,
            rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 8192),
            max_position_embeddings=131072,
            bos_token_id=128000,
            eos_token_id=128001,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def qwen2_5_0_5b(cls, **overrides: Any) -> TransformerConfig:
        """Qwen2.5-0.5B shapes: 24 layers, q/k/v bias, tied embeddings, 0.49B parameters."""
        base = dict(
            architecture="qwen2",
            vocab_size=151936,
            d_model=896,
            num_layers=24,
            num_heads=14,
            num_kv_heads=2,
            mlp_dim=4864,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            max_position_embeddings=32768,
            tie_embeddings=True,
            bos_token_id=151643,
            eos_token_id=151643,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def qwen3_0_6b(cls, **overrides: Any) -> TransformerConfig:
        """Qwen3-0.6B shapes: 28 layers, head_dim 128, q/k norm, tied, 0.60B parameters."""
        base = dict(
            architecture="qwen3",
            vocab_size=151936,
            d_model=1024,
            num_layers=28,
            num_heads=16,
            num_kv_heads=8,
            head_dim=128,
            mlp_dim=3072,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            max_position_embeddings=40960,
            tie_embeddings=True,
            bos_token_id=151643,
            eos_token_id=151645,
        )
        return cls(**{**base, **overrides})

    # Hugging Face config.json -------------------------------------------------------------

    @classmethod
    def from_hf(
        cls, config: Mapping[str, Any] | str | os.PathLike, **overrides: Any
    ) -> TransformerConfig:
        """Builds a config from a Hugging Face ``config.json`` (a dict, a file or a directory).

        Reads both the transformers-5 ``rope_parameters`` and the older ``rope_theta`` +
        ``rope_scaling`` keys; keys a ``config.json`` may omit take the defaults of the
        transformers config class of that ``model_type``.

        Args:
          config: the parsed ``config.json``, its path, or the checkpoint directory.
          **overrides: fields to set on top (e.g. ``param_dtype``, ``dtype``, ``remat``).

        Raises:
          ValueError: unsupported ``model_type`` (the message lists the supported ones),
            activation, RoPE type, or a missing required key.
        """
        if not isinstance(config, Mapping):
            path = os.fspath(config)
            if os.path.isdir(path):
                path = os.path.join(path, "config.json")
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        from jaxpref.models._hf_config import fields_from_hf

        return cls(**{**fields_from_hf(dict(config)), **overrides})

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face ``config.json`` dict (transformers-5 keys) for this config."""
        from jaxpref.models._hf_config import config_to_hf

        return config_to_hf(self)


def _unsupported_message(model_type: Any, architectures: Any = None) -> str:
    listed = ", ".join(repr(name) for name in SUPPORTED_ARCHITECTURES)
    extra = f" (architectures={architectures})" if architectures else ""
    return (
        f"Unsupported architecture: model_type={model_type!r}{extra}. jaxpref.models supports "
        f"model_type {listed}: Llama 2/3 and SmolLM2 ('llama'), Mistral, Qwen2/2.5, Qwen3."
    )


def parameter_count(config: TransformerConfig) -> int:
    """The number of parameters a :class:`TransformerConfig` describes (closed form)."""
    d, h, k, dh, f = (
        config.d_model,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.mlp_dim,
    )
    attn = d * h * dh * 2 + d * k * dh * 2
    if config.qkv_bias:
        attn += h * dh + 2 * k * dh
    if config.out_bias:
        attn += d
    if config.qk_norm:
        attn += 2 * dh
    mlp = 3 * d * f + (2 * f + d if config.mlp_bias else 0)
    layer = attn + mlp + 2 * d
    embed = config.vocab_size * d * (1 if config.tie_embeddings else 2)
    return embed + config.num_layers * layer + d
