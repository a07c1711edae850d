#!/usr/bin/env bash
# One command from a fresh machine to a running server on 127.0.0.1:8000 with the embedded model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
exec refinery serve "$@"
