"""Running and importing the scripts in ``experiments/`` from the tests."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"


def script(name: str) -> pathlib.Path:
    """The path of ``experiments/NAME.py``."""
    return EXPERIMENTS / f"{name}.py"


def load_script(name: str) -> Any:
    """Imports ``experiments/NAME.py`` (not a package) as the module ``NAME``."""
    spec = importlib.util.spec_from_file_location(name, script(name))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def run_script(name: str, workdir: pathlib.Path, *args: str, timeout: int = 600) -> dict:
    """Runs ``python experiments/NAME.py --workdir WORKDIR ARGS`` on one CPU device.

    The subprocess does not get the test session's 8 emulated devices. A failing run
    raises with the end of its output; otherwise its ``results.json`` is returned.
    """
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    done = subprocess.run(
        [sys.executable, str(script(name)), "--workdir", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if done.returncode:
        raise AssertionError(
            f"experiments/{name}.py exited with {done.returncode}:\n{done.stderr[-4000:]}"
        )
    return json.loads((workdir / "results.json").read_text())
