"""Hugging Face ``config.json`` <-> :class:`~jaxpref.models.TransformerConfig` fields.

Private helpers behind :meth:`TransformerConfig.from_hf` and :meth:`TransformerConfig.to_hf`:
transformers-5 ``rope_parameters`` and legacy ``rope_theta`` + ``rope_scaling`` keys, the
per-architecture bias and sliding-window conventions, and transformers' defaults for keys a
``config.json`` may omit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxpref.models.config import (
    _LAYER_TYPES,
    SUPPORTED_ARCHITECTURES,
    RopeScaling,
    TransformerConfig,
    _unsupported_message,
)

_ROPE_TYPES = ("default", "linear", "llama3")

# Hugging Face config-class defaults for keys that a config.json may omit (transformers 5).
_HF_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "llama": {"max_position_embeddings": 2048, "bos_token_id": 1, "eos_token_id": 2},
    "mistral": {
        "max_position_embeddings": 4096 * 32,
        "num_key_value_heads": 8,
        "sliding_window": 4096,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "qwen2": {"max_position_embeddings": 32768, "num_key_value_heads": 32, "sliding_window": 4096},
    "qwen3": {
        "max_position_embeddings": 32768,
        "num_key_value_heads": 32,
        "sliding_window": 4096,
        "head_dim": 128,
    },
}


def _model_type(config: Mapping[str, Any]) -> str:
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type is None:
        by_class = {cls_name: name for name, cls_name in SUPPORTED_ARCHITECTURES.items()}
        known = [by_class[a] for a in architectures if a in by_class]
        model_type = known[0] if known else None
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise ValueError(_unsupported_message(model_type, architectures))
    return model_type


def _rope_from_hf(config: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    params = config.get("rope_parameters")
    if params is None:
        params = dict(config.get("rope_scaling") or {})
    else:
        params = dict(params)
    if params and all(isinstance(v, Mapping) for v in params.values()):
        raise ValueError(
            f"Per-layer-type rope_parameters ({sorted(params)}) are not supported; "
            "the Llama family uses one RoPE for every layer."
        )
    theta = float(params.get("rope_theta", config.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind not in _ROPE_TYPES:
        raise ValueError(f"Unsupported RoPE type {kind!r}; supported: {list(_ROPE_TYPES)}.")
    partial = params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial != 1.0:
        raise ValueError(f"partial_rotary_factor={partial} is not supported (only 1.0).")
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling("linear", float(params["factor"]))
    original = params.get(
        "original_max_position_embeddings", config.get("max_position_embeddings", 8192)
    )
    return theta, RopeScaling(
        "llama3",
        float(params["factor"]),
        float(params["low_freq_factor"]),
        float(params["high_freq_factor"]),
        int(original),
    )


def fields_from_hf(config: dict[str, Any]) -> dict[str, Any]:
    arch = _model_type(config)
    get = lambda key, default=None: config.get(key, _HF_DEFAULTS[arch].get(key, default))
    required = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
    ]
    missing = [key for key in required if key not in config]
    if missing:
        raise ValueError(f"config.json for {arch!r} is missing required keys {missing}.")
    act = config.get("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ValueError(f"Unsupported hidden_act {act!r}; the Llama family uses 'silu'.")
    num_heads = int(config["num_attention_heads"])
    head_dim = get("head_dim")
    if head_dim is None:
        head_dim = int(config["hidden_size"]) // num_heads
    theta, scaling = _rope_from_hf(config)

    sliding_window, layer_types = None, None
    if arch == "mistral":
        sliding_window = get("sliding_window")
    elif arch in ("qwen2", "qwen3") and config.get("use_sliding_window", False):
        sliding_window = get("sliding_window")
        layer_types = config.get("layer_types")
        if layer_types is None and sliding_window is not None:
            start = int(config.get("max_window_layers", 28))
            n = int(config["num_hidden_layers"])
            layer_types = [_LAYER_TYPES[int(i >= start)] for i in range(n)]
    eos = get("eos_token_id")
    return dict(
        architecture=arch,
        vocab_size=int(config["vocab_size"]),
        d_model=int(config["hidden_size"]),
        num_layers=int(config["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(get("num_key_value_heads") or num_heads),
        head_dim=int(head_dim),
        mlp_dim=int(config["intermediate_size"]),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=int(get("max_position_embeddings")),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        attention_bias=bool(config.get("attention_bias", False)) and arch in ("llama", "qwen3"),
        mlp_bias=bool(config.get("mlp_bias", False)) and arch == "llama",
        sliding_window=None if sliding_window is None else int(sliding_window),
        layer_types=None if layer_types is None else tuple(layer_types),
        bos_token_id=get("bos_token_id"),
        eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
        pad_token_id=get("pad_token_id"),
        initializer_range=float(config.get("initializer_range", 0.02)),
    )


def config_to_hf(config: TransformerConfig) -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` (see :meth:`TransformerConfig.to_hf`)."""
    arch = config.architecture
    rope: dict[str, Any] = {"rope_theta": config.rope_theta, "rope_type": "default"}
    if config.rope_scaling is not None:
        rope.update(dataclasses.asdict(config.rope_scaling))
        if config.rope_scaling.rope_type == "linear":
            for key in ("low_freq_factor", "high_freq_factor"):
                rope.pop(key)
            rope.pop("original_max_position_embeddings")
    eos = config.eos_token_id
    eos = list(eos) if isinstance(eos, tuple) else eos
    out: dict[str, Any] = {
        "architectures": [SUPPORTED_ARCHITECTURES[arch]],
        "model_type": arch,
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.mlp_dim,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": rope,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": config.pad_token_id,
        "attention_dropout": 0.0,
        "initializer_range": config.initializer_range,
        "use_cache": True,
        "dtype": config.param_dtype.name,
    }
    if arch in ("llama", "qwen3"):
        out["attention_bias"] = config.attention_bias
    if arch == "llama":
        out["mlp_bias"] = config.mlp_bias
    if arch == "mistral":
        out["sliding_window"] = config.sliding_window
    if arch in ("qwen2", "qwen3"):
        out["use_sliding_window"] = config.sliding_window is not None
        out["sliding_window"] = config.sliding_window
        out["max_window_layers"] = config.num_layers
        kinds = ["sliding_attention" if w else "full_attention" for w in config.layer_windows]
        out["layer_types"] = kinds
    return out
