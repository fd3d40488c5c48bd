import jax
import numpy as np

from jaxpref import rewards


def test_density_ratio_reward_is_a_detached_difference():
    rng = np.random.default_rng(0)
    strong, weak = rng.normal(size=(2, 16)).astype(np.float32)
    np.testing.assert_allclose(rewards.density_ratio_reward(strong, weak), strong - weak, rtol=1e-6)
    g = jax.grad(lambda s: rewards.density_ratio_reward(s, weak).sum())(strong)
    np.testing.assert_array_equal(g, 0.0)


def test_preference_from_rewards_marks_ties():
    a = np.array([1.0, 0.0, 2.0, -1.0], np.float32)
    b = np.array([0.0, 1.0, 2.0, -1.5], np.float32)
    preferred, tie = rewards.preference_from_rewards(a, b)
    np.testing.assert_array_equal(preferred, a > b)
    np.testing.assert_array_equal(tie, a == b)
