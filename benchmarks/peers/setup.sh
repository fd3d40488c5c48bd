#!/usr/bin/env bash
# Creates the peers' own virtual environments for benchmarks/dpo_step.py, OUTSIDE the repo,
# so their pins never touch jaxpref's environment:
#
#   $PEERS_DIR/trl    torch==2.13.0 (CPU build) + trl + transformers + datasets + tokenizers
#   $PEERS_DIR/tunix  google-tunix (JAX) with jax pinned to the version of jaxpref's own
#                     environment when it can be (same XLA: the libraries are compared, not
#                     two compilers); without the pin if that does not resolve
#
# Usage:  bash benchmarks/peers/setup.sh [trl|tunix|all]      (default: all)
# PEERS_DIR defaults to ~/.cache/jaxpref-bench-peers. Re-running reuses existing venvs.
# torch is pinned exactly: ==2.13.0 resolves to a local CPU build; an unpinned torch would
# pull multi-GB CUDA wheels.
set -euo pipefail

PEERS_DIR="${PEERS_DIR:-$HOME/.cache/jaxpref-bench-peers}"
PYTHON="${PYTHON:-python3.11}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
which_peers="${1:-all}"
mkdir -p "$PEERS_DIR"

make_venv() {  # make_venv NAME -> path of its python
  local dir="$PEERS_DIR/$1"
  if [ ! -x "$dir/bin/python" ]; then
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
  fi
  echo "$dir/bin/python"
}

setup_trl() {
  local py
  py="$(make_venv trl)"
  "$py" -m pip install -q "torch==2.13.0" trl transformers datasets tokenizers
  "$py" - <<'PY'
import torch, transformers, trl, datasets, tokenizers
print("trl venv:", "torch", torch.__version__, "| trl", trl.__version__, "| transformers",
      transformers.__version__, "| datasets", datasets.__version__, "| tokenizers",
      tokenizers.__version__, "| cuda", torch.version.cuda)
PY
}

setup_tunix() {
  local py jax_pin=""
  py="$(make_venv tunix)"
  if [ -x "$REPO/.venv/bin/python" ]; then
    jax_pin="$("$REPO/.venv/bin/python" -c 'import jax, jaxlib; print(f"jax=={jax.__version__} jaxlib=={jaxlib.__version__}")' 2>/dev/null || true)"
  fi
  if [ -n "$jax_pin" ] && "$py" -m pip install -q google-tunix $jax_pin; then
    echo "tunix venv: installed with $jax_pin (same as jaxpref's environment)"
  else
    echo "tunix venv: could not install with '$jax_pin'; installing google-tunix unpinned"
    "$py" -m pip install -q google-tunix
  fi
  "$py" - <<'PY'
import importlib.metadata as md
import jax, flax
print("tunix venv:", "google-tunix", md.version("google-tunix"), "| jax", jax.__version__,
      "| flax", flax.__version__, "| optax", md.version("optax"))
from tunix.sft.dpo import dpo_trainer  # noqa: F401  (the API the benchmark drives)
from tunix.models.llama3 import model  # noqa: F401
PY
}

case "$which_peers" in
  trl) setup_trl ;;
  tunix) setup_tunix ;;
  all) setup_trl; setup_tunix ;;
  *) echo "usage: $0 [trl|tunix|all]" >&2; exit 2 ;;
esac
echo "peer environments in $PEERS_DIR"
