#!/usr/bin/env bash
# Set up (if needed) and run the quickstart: train, export, publish, serve on Triton, measure accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mlctl quickstart "$@"
