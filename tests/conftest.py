"""Test configuration shared by the whole suite.

The XLA flag below must be set before jax is imported anywhere, so that every test
(and plain ``pytest``) sees 8 emulated CPU devices for the sharding tests.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
