import dataclasses

import optax
import pytest

from jaxpref.train.config import TrainConfig, apply_overrides, learning_rate_schedule


@dataclasses.dataclass(frozen=True)
class Outer:
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    name: str = "x"


def test_overrides_apply_together_so_cross_field_checks_see_final_values():
    # batch_size=6 alone is invalid with accumulation_steps=4 (the default is 1, so set both).
    config = apply_overrides(Outer(), ["train.accumulation_steps=3", "train.batch_size=6"])
    assert (config.train.batch_size, config.train.accumulation_steps) == (6, 3)
    with pytest.raises(ValueError, match="not divisible"):
        apply_overrides(Outer(), ["train.batch_size=7", "train.accumulation_steps=3"])


def test_literals_nested_dicts_and_strings():
    config = apply_overrides(
        Outer(),
        [
            "train.mesh_shape=(2, 4, 1)",
            "train.objective_options.beta=0.5",
            "train.objective=ipo",
            "name=run one",
            "train.max_grad_norm=None",
        ],
    )
    assert config.train.mesh_shape == (2, 4, 1)
    assert config.train.objective_options == {"beta": 0.5}
    assert config.train.objective == "ipo" and config.name == "run one"
    assert config.train.max_grad_norm is None


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown config key 'train\.lr'"):
        apply_overrides(Outer(), ["train.lr=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(Outer(), ["train.batch_size"])
    with pytest.raises(ValueError, match="schedule must be one of"):
        apply_overrides(Outer(), ["train.schedule=exp"])


def test_schedule_warmup_then_cosine():
    config = TrainConfig(learning_rate=1.0, warmup_steps=10, schedule="cosine", num_steps=110)
    schedule = learning_rate_schedule(config)
    assert float(schedule(0)) == 0.0
    assert abs(float(schedule(10)) - 1.0) < 1e-6
    expected_end = optax.cosine_decay_schedule(1.0, 100, alpha=0.1)(100)
    assert abs(float(schedule(110)) - float(expected_end)) < 1e-6
