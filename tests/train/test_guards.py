"""NaN/inf guards: the host check's messages and the jit-friendly finite flag."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpref.train import NonFiniteError, all_finite, check_finite


def test_finite_metrics_pass():
    check_finite({"loss": 0.3, "grad_norm": np.float32(2.0), "count": 5, "ok": True}, step=1)
    check_finite({"loss": jnp.float32(0.3), "rewards": jnp.ones(4)}, step=1)
    check_finite({}, step=1)


def test_message_names_step_and_every_bad_metric():
    metrics = {
        "loss": jnp.float32(jnp.nan),
        "accuracy": 0.5,
        "grad_norm": np.float32(np.inf),
        "margin": -np.inf,
    }
    with pytest.raises(NonFiniteError) as info:
        check_finite(metrics, step=1234)
    assert str(info.value) == (
        "non-finite metrics at step 1234: loss=nan, grad_norm=inf, margin=-inf"
    )
    assert info.value.step == 1234
    assert info.value.names == ("loss", "grad_norm", "margin")
    assert isinstance(info.value, FloatingPointError)


def test_message_for_array_metrics_counts_bad_elements():
    with pytest.raises(NonFiniteError, match=r"step 3: rewards=2 of 5 elements non-finite"):
        check_finite({"rewards": np.array([1.0, np.nan, 2.0, np.inf, 0.0])}, step=3)


def _tree(bad=None):
    tree = {
        "w": jnp.ones((3, 4)),
        "b": jnp.zeros(4, jnp.bfloat16),
        "count": jnp.int32(3),
        "key": jax.random.key(0),
        "opt": (jnp.ones(2), None),
    }
    if bad is not None:
        tree["b"] = tree["b"].at[1].set(bad)
    return tree


@pytest.mark.parametrize("jit", [False, True])
def test_all_finite(jit):
    fn = jax.jit(all_finite) if jit else all_finite
    out = fn(_tree())
    assert out.dtype == jnp.bool_ and out.shape == ()
    assert bool(out)
    assert not bool(fn(_tree(jnp.nan)))
    assert not bool(fn(_tree(-jnp.inf)))


def test_all_finite_without_float_leaves():
    assert bool(all_finite({"n": jnp.arange(3), "k": jax.random.key(0)}))
    assert bool(all_finite({}))


def test_all_finite_python_scalars():
    assert not bool(all_finite({"x": float("nan"), "y": 1}))
