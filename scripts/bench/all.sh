#!/usr/bin/env bash
# Every CPU benchmark in one run on one machine: JSON, markdown and PNG under OUT (default bench-out/).
# The GPU benchmark is separate (scripts/bench/gpu.sh), for a machine with a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-bench-out}
PY=.venv/bin/python
$PY scripts/bench/serving.py --out "$OUT"
$PY scripts/bench/gateway.py --out "$OUT"
$PY scripts/bench/control_plane.py --out "$OUT"
$PY scripts/bench/monitor.py --out "$OUT"
echo "results in $OUT/" >&2
