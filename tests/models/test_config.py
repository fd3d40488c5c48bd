"""Tests for jaxpref.models.config: presets, validation, Hugging Face config.json I/O."""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import pytest

from jaxpref.models import (
    SUPPORTED_ARCHITECTURES,
    RopeScaling,
    TransformerConfig,
    parameter_count,
)

LLAMA_3_2_1B_JSON = {
    # The fields of meta-llama/Llama-3.2-1B's config.json (legacy rope keys).
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "torch_dtype": "bfloat16",
}


def test_preset_from_legacy_json_equals_preset():
    config = TransformerConfig.from_hf(LLAMA_3_2_1B_JSON)
    assert config == TransformerConfig.llama3_2_1b(rms_norm_eps=1e-5)
    assert config.rope_scaling == RopeScaling("llama3", 32.0, 1.0, 4.0, 8192)


def test_config_is_frozen_and_hashable():
    config = TransformerConfig.tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.d_model = 3  # type: ignore[misc]
    assert hash(config) == hash(TransformerConfig.tiny())
    assert config.replace(remat="full") != config


@pytest.mark.parametrize(
    "preset, published",
    [
        # Totals as the model cards round them (Llama-3.2-1B is listed as 1.23B/1.24B).
        (TransformerConfig.llama3_2_1b, 1.236e9),
        (TransformerConfig.llama3_1_8b, 8.03e9),
        (TransformerConfig.smollm2_135m, 134.5e6),
        (TransformerConfig.qwen2_5_0_5b, 0.494e9),
        (TransformerConfig.qwen3_0_6b, 0.596e9),
    ],
)
def test_parameter_counts_match_published_models(preset, published):
    assert parameter_count(preset()) == pytest.approx(published, rel=2e-3)


def test_non_embedding_counts_match_qwen_model_cards():
    # Qwen2.5-0.5B: 0.36B non-embedding; Qwen3-0.6B: 0.44B non-embedding (model cards).
    for preset, published in [
        (TransformerConfig.qwen2_5_0_5b, 0.36e9),
        (TransformerConfig.qwen3_0_6b, 0.44e9),
    ]:
        config = preset()
        embedding = config.vocab_size * config.d_model
        assert parameter_count(config) - embedding == pytest.approx(published, rel=0.01)


def test_transformers5_rope_parameters_and_defaults():
    config = TransformerConfig.from_hf(
        {
            "model_type": "qwen2",
            "vocab_size": 10,
            "hidden_size": 8,
            "intermediate_size": 16,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
            "use_sliding_window": True,
            "sliding_window": 5,
            "max_window_layers": 1,
        }
    )
    assert config.rope_theta == 1e6 and config.rope_scaling == RopeScaling("linear", 2.0)
    assert config.num_kv_heads == 1
    assert config.qkv_bias and not config.out_bias and not config.qk_norm
    assert config.layer_windows == (None, 5, 5)
    assert config.rms_norm_eps == 1e-6  # the transformers default when absent


def test_mistral_defaults_to_a_4096_window_and_qwen3_has_qk_norm():
    base = {
        "vocab_size": 10,
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    mistral = TransformerConfig.from_hf({**base, "model_type": "mistral"})
    assert mistral.layer_windows == (4096, 4096)
    qwen3 = TransformerConfig.from_hf({**base, "model_type": "qwen3", "head_dim": 4})
    assert qwen3.qk_norm and qwen3.head_dim == 4 and qwen3.layer_windows == (None, None)
    # Qwen2's sliding_window is ignored unless use_sliding_window is set (as in transformers).
    qwen2 = TransformerConfig.from_hf({**base, "model_type": "qwen2", "sliding_window": 3})
    assert qwen2.sliding_window is None


def test_unsupported_architecture_names_it_and_lists_supported():
    with pytest.raises(ValueError) as info:
        TransformerConfig.from_hf({**LLAMA_3_2_1B_JSON, "model_type": "gemma2"})
    message = str(info.value)
    assert "gemma2" in message
    for name in SUPPORTED_ARCHITECTURES:
        assert repr(name) in message
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        TransformerConfig.from_hf({"architectures": ["GPT2LMHeadModel"]})


@pytest.mark.parametrize(
    "change, match",
    [
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "yarn"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ],
)
def test_unsupported_features_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig.from_hf({**LLAMA_3_2_1B_JSON, **change})


def test_missing_required_key_is_named():
    config = dict(LLAMA_3_2_1B_JSON)
    del config["intermediate_size"]
    with pytest.raises(ValueError, match="intermediate_size"):
        TransformerConfig.from_hf(config)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_kv_heads": 3}, "multiple of num_kv_heads"),
        ({"remat": "sometimes"}, "remat"),
        ({"architecture": "gpt2"}, "Unsupported architecture"),
        ({"architecture": "qwen2", "attention_bias": True}, "attention_bias"),
        ({"sliding_window": 4}, "sliding-window"),
        ({"architecture": "mistral", "layer_types": ("full_attention",)}, "layer_types"),
    ],
)
def test_invalid_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerConfig.tiny(**kwargs)


@pytest.mark.parametrize(
    "config",
    [
        TransformerConfig.llama3_2_1b(),
        TransformerConfig.qwen2_5_0_5b(),
        TransformerConfig.qwen3_0_6b(attention_bias=True),
        TransformerConfig.tiny(architecture="mistral", sliding_window=7),
        TransformerConfig.tiny(
            architecture="qwen2",
            sliding_window=3,
            layer_types=("full_attention", "sliding_attention"),
        ),
        TransformerConfig.tiny(rope_scaling=RopeScaling("linear", 4.0), eos_token_id=(1, 2)),
    ],
    ids=["llama3", "qwen2", "qwen3", "mistral", "qwen2-sliding", "linear-rope"],
)
def test_to_hf_round_trips(config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(config.to_hf()))
    assert TransformerConfig.from_hf(tmp_path) == config


def test_dtypes_and_overrides():
    config = TransformerConfig.from_hf(LLAMA_3_2_1B_JSON, dtype="bfloat16", remat="dots")
    assert config.param_dtype == jnp.float32 and config.compute_dtype == jnp.bfloat16
    assert config.remat == "dots"
    assert config.to_hf()["dtype"] == "float32"
