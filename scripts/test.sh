#!/usr/bin/env bash
# One command from a fresh machine to the full test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
# The review page is tested in Debian's headless Chromium (playwright drives it; it never
# downloads a browser of its own).
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
. .venv/bin/activate
exec python -m pytest "$@"
