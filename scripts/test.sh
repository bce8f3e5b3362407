#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite against real servers that the tests start and stop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
