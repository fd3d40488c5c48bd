"""The command line both peer scripts share (standard library only: each runs in its own venv)."""

from __future__ import annotations

import argparse


def peer_parser(description: str, variants: list[str]) -> argparse.ArgumentParser:
    """The benchmark's model and batch sizes (defaults: the full config) and run lengths."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--variant", default=variants[0], choices=variants)
    for name, default in (
        ("layers", 4),
        ("d-model", 256),
        ("mlp", 688),
        ("heads", 4),
        ("vocab", 32000),
        ("prompt", 64),
        ("response", 192),
        ("pairs", 8),
    ):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps after the first")
    parser.add_argument("--seed", type=int, default=0)
    return parser
