"""Tests for jaxpref.models.checkpoints: clear errors, formats, dtypes, the GGUF hand-off.

Checkpoints here are written by :func:`save_pretrained` or safetensors directly, so these
tests need no torch; transformers parity is in ``test_transformer_parity.py``.
"""

from __future__ import annotations

import json
import sys
import types

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from jaxpref.models import (
    SUPPORTED_ARCHITECTURES,
    CheckpointError,
    Transformer,
    TransformerConfig,
    from_pretrained,
    save_pretrained,
    tensor_names,
)
from jaxpref.models.checkpoints import ArraySource, load_from_source

safetensors_numpy = pytest.importorskip("safetensors.numpy")

IDS = jnp.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 5]])
MASK = IDS != 0


def logits_of(model):
    return np.asarray(nnx.jit(lambda m: m(IDS, attention_mask=MASK))(model))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random tiny Qwen3 model (biases off, q/k norms on) and its checkpoint directory."""
    model = Transformer(TransformerConfig.tiny(architecture="qwen3"), rngs=nnx.Rngs(0))
    path = tmp_path_factory.mktemp("ckpt")
    save_pretrained(model, path)
    return model, path


def read_tensors(path):
    return safetensors_numpy.load_file(path / "model.safetensors")


def test_save_then_load_is_exact(saved):
    model, path = saved
    loaded = from_pretrained(path)
    assert loaded.config == model.config
    np.testing.assert_array_equal(logits_of(loaded), logits_of(model))
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]
    assert set(read_tensors(path)) == set(tensor_names(model.config))


def test_hf_layout_of_saved_tensors(saved):
    model, path = saved
    tensors = read_tensors(path)
    q = tensors["model.layers.0.self_attn.q_proj.weight"]  # nn.Linear [out, in]
    kernel = np.asarray(model.layers[0].self_attn.q_proj.kernel[...])  # [d, heads, head_dim]
    np.testing.assert_array_equal(q, kernel.reshape(64, -1).T)
    o = tensors["model.layers.0.self_attn.o_proj.weight"]
    kernel = np.asarray(model.layers[0].self_attn.o_proj.kernel[...])  # [heads, head_dim, d]
    np.testing.assert_array_equal(o, kernel.reshape(-1, 64).T)


def test_dtype_and_config_overrides(saved):
    model, path = saved
    loaded = from_pretrained(path, dtype=jnp.bfloat16, remat="full")
    assert loaded.embed_tokens.embedding[...].dtype == jnp.bfloat16
    assert loaded.config.remat == "full"
    np.testing.assert_allclose(logits_of(loaded), logits_of(model), atol=0.1)
    mixed = from_pretrained(path, compute_dtype=jnp.bfloat16)
    assert mixed.config.param_dtype == jnp.float32 and mixed.config.dtype == jnp.bfloat16
    with pytest.raises(TypeError, match="dtype="):
        from_pretrained(path, param_dtype=jnp.bfloat16)


def test_bfloat16_checkpoint_loads_to_float32(tmp_path):
    model = Transformer(TransformerConfig.tiny(param_dtype=jnp.bfloat16), rngs=nnx.Rngs(0))
    save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    assert read_tensors(tmp_path)["model.norm.weight"].dtype == ml_dtypes.bfloat16
    loaded = from_pretrained(tmp_path)
    assert loaded.config.param_dtype == jnp.float32
    np.testing.assert_array_equal(
        loaded.embed_tokens.embedding[...], model.embed_tokens.embedding[...].astype(jnp.float32)
    )


def rewrite(path, tmp_path, edit_tensors=None, edit_config=None):
    tensors, config = read_tensors(path), json.loads((path / "config.json").read_text())
    if edit_tensors:
        edit_tensors(tensors)
    if edit_config:
        edit_config(config)
    safetensors_numpy.save_file(tensors, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_missing_tensor_is_named(saved, tmp_path):
    name = "model.layers.1.mlp.down_proj.weight"
    path = rewrite(saved[1], tmp_path, edit_tensors=lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=f"missing weight tensor.*{name}"):
        from_pretrained(path)


def test_shape_mismatch_names_tensor_and_both_shapes(saved, tmp_path):
    name = "model.layers.0.self_attn.k_proj.weight"

    def shrink(tensors):
        tensors[name] = tensors[name][:16]

    path = rewrite(saved[1], tmp_path, edit_tensors=shrink)
    with pytest.raises(CheckpointError) as info:
        from_pretrained(path)
    assert name in str(info.value) and "(16, 64)" in str(info.value)
    assert "(32, 64)" in str(info.value)


def test_config_disagreeing_with_tensors(saved, tmp_path):
    path = rewrite(saved[1], tmp_path, edit_config=lambda c: c.update(intermediate_size=64))
    pattern = r"shape mismatch for tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight'"
    with pytest.raises(CheckpointError, match=pattern):
        from_pretrained(path)


def test_unexpected_tensor_is_named(saved, tmp_path):
    def add(tensors):
        tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.zeros(8, np.float32)

    path = rewrite(saved[1], tmp_path, edit_tensors=add)
    with pytest.raises(CheckpointError, match=r"unexpected tensor.*q_proj\.bias"):
        from_pretrained(path)


def test_unsupported_architecture_in_checkpoint(saved, tmp_path):
    path = rewrite(saved[1], tmp_path, edit_config=lambda c: c.update(model_type="phi3"))
    with pytest.raises(ValueError, match="phi3") as info:
        from_pretrained(path)
    assert all(name in str(info.value) for name in SUPPORTED_ARCHITECTURES)


@pytest.mark.parametrize("filename", ["pytorch_model.bin", "model.pt", "weights.pth"])
def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path, filename):
    # Not even a valid pickle: the loader must refuse by name, never open it.
    (tmp_path / filename).write_bytes(b"\x80\x04 this would run code if unpickled")
    (tmp_path / "config.json").write_text(json.dumps(TransformerConfig.tiny().to_hf()))
    for target in (tmp_path, tmp_path / filename):
        with pytest.raises(CheckpointError, match="safetensors") as info:
            from_pretrained(target)
        assert filename in str(info.value) and "unpickl" in str(info.value)


def test_no_weights_and_no_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TransformerConfig.tiny().to_hf()))
    with pytest.raises(CheckpointError, match=r"no model\.safetensors"):
        from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        from_pretrained(tmp_path / "absent")


def test_index_sharded_files_written_by_hand(saved, tmp_path):
    model, path = saved
    tensors = read_tensors(path)
    names = sorted(tensors)
    weight_map = {}
    for part, chunk in enumerate((names[::2], names[1::2])):
        file = f"model-0000{part + 1}-of-00002.safetensors"
        safetensors_numpy.save_file({n: tensors[n] for n in chunk}, tmp_path / file)
        weight_map.update(dict.fromkeys(chunk, file))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    np.testing.assert_array_equal(logits_of(from_pretrained(tmp_path)), logits_of(model))


def test_rules_without_mesh_is_an_error(saved):
    from jaxpref.models import ShardingRules

    with pytest.raises(ValueError, match="without a mesh"):
        from_pretrained(saved[1], rules=ShardingRules.fsdp())


def test_gguf_path_is_delegated_to_read_gguf(saved, tmp_path, monkeypatch):
    """The contract with jaxpref.models.gguf, checked with a stand-in module."""
    model, path = saved
    hf_config = json.loads((path / "config.json").read_text())
    calls = []

    def read_gguf(p):
        calls.append(p)
        return hf_config, read_tensors(path)

    fake = types.ModuleType("jaxpref.models.gguf")
    fake.read_gguf = read_gguf
    monkeypatch.setitem(sys.modules, "jaxpref.models.gguf", fake)
    import jaxpref.models

    monkeypatch.setattr(jaxpref.models, "gguf", fake, raising=False)
    loaded = from_pretrained(tmp_path / "model.gguf")
    assert [p.name for p in calls] == ["model.gguf"]
    np.testing.assert_array_equal(logits_of(loaded), logits_of(model))


def test_real_gguf_reader_end_to_end(tmp_path):
    """A tiny llama.cpp-layout GGUF (written by the GGUF tests' helper) loads and runs."""
    pytest.importorskip("jaxpref.models.gguf")
    pytest.importorskip("gguf")
    gguf_files = pytest.importorskip("tests.models.gguf_files")
    weights = gguf_files.write_tiny_llama(tmp_path / "tiny.gguf", tied=False)
    model = from_pretrained(tmp_path / "tiny.gguf")
    tiny = gguf_files.TINY
    assert (model.config.num_layers, model.config.d_model) == (
        tiny["num_hidden_layers"],
        tiny["hidden_size"],
    )
    reference = load_from_source(model.config, ArraySource(weights))
    ids = jnp.array([[1, 2, 3, 4, 5]]) % tiny["vocab_size"]
    np.testing.assert_allclose(model(ids), reference(ids), atol=1e-5)
