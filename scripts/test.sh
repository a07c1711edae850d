#!/usr/bin/env bash
# One command from a fresh machine to the full test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
. .venv/bin/activate
exec python -m pytest "$@"
