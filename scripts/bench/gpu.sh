#!/usr/bin/env bash
# The GPU benchmark as one prepared command for a lent H100/H200 (at most ~8 minutes).
# `gpu.sh --tune [options]` runs scripts/bench/gpu_tune.py instead: mlctl tune on the same model (~6 minutes).
# `gpu.sh --hotswap [options]` runs scripts/bench/gpu_hotswap.py: issue 16's soak (KIND_GPU TorchScript switched under
# load, RSS and GPU memory) and overload drills (~4.5 minutes, at most 5.5 with --max-seconds 300).
# Needs, carried beside the working tree (see docs/benchmarks.md for how they are made):
#   .gpu/triton-server.tar.xz  tritonserver, the Python backend and its 3.12 stub, and their libraries,
#                              taken from the nvidia-pytriton 0.7.0 wheel
#   .whl/                      cp312 wheels: numpy 1.26.4, tritonclient, grpcio, protobuf, python-rapidjson, ml-dtypes
# The image's Python 3.12 has torch and numpy 2; the Python backend needs numpy<2, so a venv gets numpy 1.26
# first and sees the image's packages (torch) after it.
set -euo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT" /tmp/mlctl-triton
tar -xJf .gpu/triton-server.tar.xz -C /tmp/mlctl-triton
python3 -m venv /tmp/mlctl-venv
SITE=$(/tmp/mlctl-venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
IMAGE_SITE=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n%s\n%s\n' "$PWD" /tmp/mlctl-triton "$IMAGE_SITE" > "$SITE/mlctl-gpu.pth"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
SCRIPT=scripts/bench/gpu_bench.py
if [ "${1:-}" = --tune ]; then SCRIPT=scripts/bench/gpu_tune.py; shift; fi
if [ "${1:-}" = --hotswap ]; then SCRIPT=scripts/bench/gpu_hotswap.py; shift; fi
exec /tmp/mlctl-venv/bin/python "$SCRIPT" --out "$OUT" "$@"
