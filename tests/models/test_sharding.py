"""Sharding on 8 emulated CPU devices (tests/conftest.py) and abstract shapes of large models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxpref.models import (
    ShardingRules,
    Transformer,
    TransformerConfig,
    create_sharded,
    from_pretrained,
    logical_axes,
    make_mesh,
    named_shardings,
    parameter_count,
    partition_specs,
    save_pretrained,
    shard_model,
)

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (emulated) devices")

# The tiny model has biases on q/k/v (qwen2) so that every logical axis occurs.
CONFIG = TransformerConfig.tiny(architecture="qwen2")
IDS = jnp.array([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]])
MASK = IDS != 0

# Expected specs of representative parameters under each preset.
EXPECTED = {
    "data_parallel": {
        ("embed_tokens", "embedding"): P(None, None),
        ("layers", 0, "self_attn", "q_proj", "kernel"): P(None, None, None),
        ("layers", 0, "mlp", "down_proj", "kernel"): P(None, None),
        ("lm_head", "kernel"): P(None, None),
    },
    "fsdp": {
        ("embed_tokens", "embedding"): P(None, "fsdp"),
        ("layers", 0, "self_attn", "q_proj", "kernel"): P("fsdp", None, None),
        ("layers", 0, "self_attn", "k_proj", "bias"): P(None, None),
        ("layers", 0, "self_attn", "o_proj", "kernel"): P(None, None, "fsdp"),
        ("layers", 0, "mlp", "down_proj", "kernel"): P(None, "fsdp"),
        ("layers", 0, "input_layernorm", "scale"): P(None),
        ("lm_head", "kernel"): P("fsdp", None),
    },
    "fsdp_tensor": {
        ("embed_tokens", "embedding"): P("tensor", "fsdp"),
        ("layers", 0, "self_attn", "q_proj", "kernel"): P("fsdp", "tensor", None),
        ("layers", 0, "self_attn", "k_proj", "kernel"): P("fsdp", "tensor", None),
        ("layers", 0, "self_attn", "k_proj", "bias"): P("tensor", None),
        ("layers", 0, "self_attn", "o_proj", "kernel"): P("tensor", None, "fsdp"),
        ("layers", 0, "mlp", "gate_proj", "kernel"): P("fsdp", "tensor"),
        ("layers", 0, "mlp", "down_proj", "kernel"): P("tensor", "fsdp"),
        ("layers", 0, "post_attention_layernorm", "scale"): P(None),
        ("lm_head", "kernel"): P("fsdp", "tensor"),
    },
}
MESH_SHAPES = {"data_parallel": (8, 1, 1), "fsdp": (2, 4, 1), "fsdp_tensor": (2, 2, 2)}


def variables(model):
    return dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))


@nnx.jit
def logits(model):
    return model(IDS, attention_mask=MASK)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    path = tmp_path_factory.mktemp("sharding")
    save_pretrained(model, path)
    return path, np.asarray(logits(model))


def test_rules_presets_map_logical_axes():
    assert ShardingRules.data_parallel().spec(("batch", "embed")) == P(("data", "fsdp"), None)
    assert ShardingRules.fsdp().spec(("vocab", "embed")) == P(None, "fsdp")
    tp = ShardingRules.fsdp_tensor()
    assert tp.spec(("embed", "kv_heads", "head_dim")) == P("fsdp", "tensor", None)
    assert tp.spec(("mlp", "embed")) == P("tensor", "fsdp")
    assert tp.replace(vocab=None).spec(("vocab",)) == P(None)
    assert tp.spec((None, "unknown")) == P(None, None)
    with pytest.raises(ValueError, match="mapped twice"):
        ShardingRules((("embed", "fsdp"), ("embed", None)))


def test_every_parameter_has_logical_axes():
    abstract = nnx.eval_shape(lambda: Transformer(CONFIG, rngs=nnx.Rngs(0)))
    names = {"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "norm"}
    for path, axes in nnx.to_flat_state(logical_axes(nnx.state(abstract, nnx.Param))):
        axes = axes.get_value()
        assert axes and set(axes) <= names, (path, axes)


def test_partition_specs_agree_with_flax_logical_rules():
    rules = ShardingRules.fsdp_tensor()
    abstract = nnx.eval_shape(lambda: Transformer(CONFIG, rngs=nnx.Rngs(0)))
    ours = partition_specs(abstract, rules)
    with nnx.logical_axis_rules(rules.flax_rules):
        flax_specs = nnx.get_partition_spec(nnx.state(abstract))
    assert jax.tree.leaves(ours) == jax.tree.leaves(flax_specs)


@pytest.mark.parametrize("eager", [True, False])
def test_construction_never_shards_eagerly_with_or_without_a_mesh(eager):
    # flax 0.12 shards annotated variables on creation when eager sharding is on; our
    # parameters opt out, so construction works under a mesh and without one.
    with nnx.use_eager_sharding(eager):
        Transformer(CONFIG, rngs=nnx.Rngs(0))
        with jax.set_mesh(make_mesh((2, 2, 2))):
            model = Transformer(CONFIG, rngs=nnx.Rngs(0))
    flat = nnx.to_flat_state(nnx.state(model))
    assert not any(var.get_metadata()["eager_sharding"] for _, var in flat)


def test_make_mesh():
    mesh = make_mesh((2, -1, 2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="needs 12 devices"):
        make_mesh((3, 4, 1))
    with pytest.raises(ValueError, match="At most one"):
        make_mesh((-1, -1, 1))


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_load_on_mesh_matches_unsharded(checkpoint, preset):
    path, expected_logits = checkpoint
    mesh = make_mesh(MESH_SHAPES[preset])
    model = from_pretrained(path, mesh=mesh, rules=getattr(ShardingRules, preset)())
    params = variables(model)
    for key, spec in EXPECTED[preset].items():
        value = params[key].get_value()
        assert value.sharding == NamedSharding(mesh, spec), key
        # Each device holds only its shard, not a replicated copy.
        shard_shape = value.addressable_shards[0].data.shape
        assert shard_shape == value.sharding.shard_shape(value.shape), key
    np.testing.assert_allclose(logits(model), expected_logits, atol=1e-5)


def test_default_rules_with_a_mesh_are_fsdp_tensor(checkpoint):
    path, expected_logits = checkpoint
    mesh = make_mesh((1, 4, 2))
    model = from_pretrained(path, mesh=mesh)
    spec = variables(model)[("layers", 1, "mlp", "up_proj", "kernel")].get_value().sharding.spec
    assert spec == P("fsdp", "tensor")
    np.testing.assert_allclose(logits(model), expected_logits, atol=1e-5)


def test_indivisible_dimension_is_reported(checkpoint):
    path, _ = checkpoint
    with pytest.raises(ValueError, match="'kv_heads' of size 2 is not divisible"):
        from_pretrained(path, mesh=make_mesh((1, 2, 4)))


def test_explicit_axis_mesh_is_refused(checkpoint):
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Explicit,))
    with pytest.raises(ValueError, match=r"AxisType\.Auto"):
        from_pretrained(checkpoint[0], mesh=mesh, rules=ShardingRules.fsdp())


def test_rules_naming_absent_mesh_axis_are_refused(checkpoint):
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))
    with pytest.raises(ValueError, match="lacks"):
        from_pretrained(checkpoint[0], mesh=mesh, rules=ShardingRules.fsdp_tensor())


def test_create_sharded_and_shard_model_equal_plain_init():
    rules = ShardingRules.fsdp_tensor()
    mesh = make_mesh((2, 2, 2))
    plain = Transformer(CONFIG, rngs=nnx.Rngs(3))
    created = create_sharded(lambda: Transformer(CONFIG, rngs=nnx.Rngs(3)), mesh, rules)
    moved = shard_model(Transformer(CONFIG, rngs=nnx.Rngs(3)), mesh, rules)
    expected = named_shardings(plain, mesh, rules)
    for model in (created, moved):
        flat, shardings = variables(model), dict(nnx.to_flat_state(expected))
        for key, var in variables(plain).items():
            # jit may fuse the initialiser's scaling differently: equal up to 1 ulp.
            np.testing.assert_allclose(flat[key].get_value(), var.get_value(), rtol=1e-6)
            assert flat[key].get_value().sharding == shardings[key].get_value(), key


@pytest.mark.parametrize(
    "preset, published",
    [(TransformerConfig.llama3_2_1b, 1.24e9), (TransformerConfig.llama3_1_8b, 8.03e9)],
    ids=["llama-3.2-1b", "llama-3.1-8b"],
)
def test_large_configs_abstractly(preset, published):
    config = preset()
    abstract = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    params = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert all(isinstance(p, jax.ShapeDtypeStruct) for p in params)  # nothing allocated
    count = sum(int(np.prod(p.shape)) for p in params)
    assert count == parameter_count(config)
    assert count == pytest.approx(published, rel=0.005)
    # Every parameter divides evenly on an FSDP x tensor mesh of the 8 devices.
    shardings = named_shardings(abstract, make_mesh((1, 4, 2)), ShardingRules.fsdp_tensor())
    q = dict(nnx.to_flat_state(shardings))[("layers", 0, "self_attn", "q_proj", "kernel")]
    assert q.get_value().spec == P("fsdp", "tensor", None)
    embed = next(p for p in params if p.shape == (config.vocab_size, config.d_model))
    assert embed.dtype == jnp.float32
