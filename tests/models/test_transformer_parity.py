"""Parity with Hugging Face transformers (torch, CPU): logits, save/load round trips.

For each supported architecture a tiny random model is created with transformers, saved as
safetensors, loaded with :func:`jaxpref.models.from_pretrained`, and its logits compared on a
padded batch (non-padding positions only). Biases and norm scales are perturbed away from
their 0/1 initialisation so that loading them wrongly would show.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxpref.models import from_pretrained, save_pretrained  # noqa: E402

TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
)
LLAMA3_ROPE = {
    # A tiny original context (16) so that both the smoothed and the fully scaled frequency
    # bands of Llama 3.1's scaling occur with head_dim 16.
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    },
    "rope_theta": 500000.0,
}
ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama3-rope": ("LlamaConfig", "LlamaForCausalLM", LLAMA3_ROPE),
    "llama-bias": ("LlamaConfig", "LlamaForCausalLM", {"attention_bias": True, "mlp_bias": True}),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 32}),
    "mistral-window": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 4}),
}

BATCH, TIME = 3, 11


def make_hf_model(name: str):
    config_cls, model_cls, extra = ARCHITECTURES[name]
    config = getattr(transformers, config_cls)(**TINY, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias") or "norm" in param_name:
                param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (hf model, checkpoint directory), built once per module."""
    out = {}
    for name in ARCHITECTURES:
        model = make_hf_model(name)
        directory = tmp_path_factory.mktemp(name)
        model.save_pretrained(directory)
        out[name] = (model, directory)
    return out


def padded_batch(side: str):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, TINY["vocab_size"], (BATCH, TIME))
    lengths = np.array([TIME, TIME - 4, TIME - 7])
    mask = np.arange(TIME)[None, :] < lengths[:, None]
    if side == "left":
        mask = mask[:, ::-1]
    ids = np.where(mask, ids, 0)
    return ids, mask


def hf_logits(model, ids, mask):
    # Positions count real tokens only (as transformers' generate does for left padding).
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = model(
            torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
            position_ids=torch.from_numpy(positions),
        )
    return out.logits.numpy()


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_logits_match_transformers(checkpoints, name, side):
    hf_model, directory = checkpoints[name]
    ids, mask = padded_batch(side)
    model = from_pretrained(directory)
    logits = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)))
    expected = hf_logits(hf_model, ids, mask)
    assert logits.dtype == np.float32 and logits.shape == (BATCH, TIME, TINY["vocab_size"])
    np.testing.assert_allclose(logits[mask], expected[mask], rtol=0, atol=1e-4)


def test_right_padding_matches_transformers_default_positions(checkpoints):
    hf_model, directory = checkpoints["llama3-rope"]
    ids, mask = padded_batch("right")
    with torch.no_grad():
        expected = hf_model(
            torch.from_numpy(ids), attention_mask=torch.from_numpy(mask.astype(np.int64))
        ).logits.numpy()
    logits = np.asarray(from_pretrained(directory)(jnp.asarray(ids), attention_mask=mask))
    np.testing.assert_allclose(logits[mask], expected[mask], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_save_pretrained_round_trips_into_transformers(checkpoints, name, tmp_path):
    hf_model, directory = checkpoints[name]
    ids, mask = padded_batch("left")
    save_pretrained(from_pretrained(directory), tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(hf_model)
    np.testing.assert_allclose(
        hf_logits(reloaded, ids, mask)[mask], hf_logits(hf_model, ids, mask)[mask], atol=1e-6
    )
    for key, value in hf_model.state_dict().items():
        np.testing.assert_array_equal(reloaded.state_dict()[key].numpy(), value.numpy(), key)


def test_index_sharded_checkpoint(tmp_path):
    hf_model = make_hf_model("qwen3")
    hf_model.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert not (tmp_path / "model.safetensors").exists()
    ids, mask = padded_batch("right")
    logits = np.asarray(from_pretrained(tmp_path)(jnp.asarray(ids), attention_mask=mask))
    np.testing.assert_allclose(logits[mask], hf_logits(hf_model, ids, mask)[mask], atol=1e-4)


def test_tied_embeddings_share_one_matrix(checkpoints):
    _, directory = checkpoints["llama-tied"]
    model = from_pretrained(directory)
    assert model.config.tie_embeddings and model.lm_head is None
    np.testing.assert_array_equal(model.unembedding, model.embed_tokens.embedding[...].T)
    _, untied_directory = checkpoints["llama"]
    untied = from_pretrained(untied_directory)
    np.testing.assert_array_equal(untied.unembedding, untied.lm_head.kernel[...])
