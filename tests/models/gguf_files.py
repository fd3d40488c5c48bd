"""Tiny GGUF files written by the tests themselves, in llama.cpp's layout, from known weights.

The weights are drawn in Hugging Face's layout; :func:`write_tiny_llama` writes them the way
llama.cpp's converter would (its names, its Q/K row order, ggml's dimension order) and returns
what a correct reader must give back.
"""

from __future__ import annotations

import pathlib
import string

import numpy as np

# A byte-level BPE vocabulary: three ChatML specials, a-z, the GPT-2 space "Ġ", two merges.
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENS = [*SPECIALS, *string.ascii_lowercase, "Ġ", "Ġa", "ab"]
MERGES = ["Ġ a", "a b"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] "
    "+ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TINY = {
    "vocab_size": len(TOKENS),
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10_000.0,
    "max_position_embeddings": 128,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}


def llama_cpp_rotary_order(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row order, by index arithmetic (independent of the reader's reshape).

    In each head of dimension d, Hugging Face rotates row j with row j + d/2 ("rotate half");
    llama.cpp rotates rows 2j and 2j + 1. Its converter therefore moves Hugging Face row
    ``h*d + r*d/2 + j`` to GGUF row ``h*d + 2*j + r``.
    """
    d = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for r in range(2):
            for j in range(d // 2):
                out[h * d + 2 * j + r] = w[h * d + r * d // 2 + j]
    return out


def write_tiny_llama(
    path: pathlib.Path, *, tied: bool = True, arch: str = "llama", seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes a tiny Llama GGUF to ``path``; returns the float32 HF-layout weights it holds.

    Most tensors are F32. Layer 0's ``v_proj`` is F16 (drawn as float16, so exact) and layer
    1's ``down_proj`` is Q8_0; for that one the returned value is the dequantised Q8_0 data.
    """
    import gguf

    rng = np.random.default_rng(seed)
    c = TINY
    h, i, v, d = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d

    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    hf = {"model.embed_tokens.weight": normal(v, h), "model.norm.weight": normal(h)}
    if not tied:
        hf["lm_head.weight"] = normal(v, h)
    gguf_names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    per_layer = {
        "input_layernorm": ("attn_norm", (h,)),
        "self_attn.q_proj": ("attn_q", (q, h)),
        "self_attn.k_proj": ("attn_k", (kv, h)),
        "self_attn.v_proj": ("attn_v", (kv, h)),
        "self_attn.o_proj": ("attn_output", (h, q)),
        "post_attention_layernorm": ("ffn_norm", (h,)),
        "mlp.gate_proj": ("ffn_gate", (i, h)),
        "mlp.up_proj": ("ffn_up", (i, h)),
        "mlp.down_proj": ("ffn_down", (h, i)),
    }
    for layer in range(c["num_hidden_layers"]):
        for hf_name, (gguf_name, shape) in per_layer.items():
            hf[f"model.layers.{layer}.{hf_name}.weight"] = normal(*shape)
            gguf_names[f"model.layers.{layer}.{hf_name}.weight"] = f"blk.{layer}.{gguf_name}.weight"

    f16 = "model.layers.0.self_attn.v_proj.weight"
    q8 = "model.layers.1.mlp.down_proj.weight"
    hf[f16] = hf[f16].astype(np.float16).astype(np.float32)

    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(c["num_hidden_layers"])
    writer.add_context_length(c["max_position_embeddings"])
    writer.add_embedding_length(h)
    writer.add_feed_forward_length(i)
    writer.add_head_count(c["num_attention_heads"])
    writer.add_head_count_kv(c["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(c["rms_norm_eps"])
    writer.add_rope_freq_base(c["rope_theta"])
    writer.add_rope_dimension_count(d)
    writer.add_vocab_size(v)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3 if t in SPECIALS else 1 for t in TOKENS])
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(c["bos_token_id"])
    writer.add_eos_token_id(c["eos_token_id"])
    writer.add_pad_token_id(c["pad_token_id"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    for hf_name, w in hf.items():
        stored = w
        if hf_name.endswith("q_proj.weight"):
            stored = llama_cpp_rotary_order(w, c["num_attention_heads"])
        elif hf_name.endswith("k_proj.weight"):
            stored = llama_cpp_rotary_order(w, c["num_key_value_heads"])
        if hf_name == f16:
            writer.add_tensor(gguf_names[hf_name], stored.astype(np.float16))
        elif hf_name == q8:
            qtype = gguf.GGMLQuantizationType.Q8_0
            blocks = gguf.quants.quantize(stored, qtype)
            writer.add_tensor(gguf_names[hf_name], blocks, raw_dtype=qtype)
            hf[hf_name] = gguf.quants.dequantize(blocks, qtype).reshape(w.shape)
        else:
            writer.add_tensor(gguf_names[hf_name], stored)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf
