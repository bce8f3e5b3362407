#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite against real servers that the tests start and stop:
# tritonserver (from the nvidia-pytriton wheel), Prometheus (Debian's package) and an S3-compatible server (moto).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "setup: installing Debian's prometheus package (prometheus, promtool)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus >/dev/null
fi
bash scripts/setup.sh
bash scripts/kubectl.sh
exec .venv/bin/python -m pytest "$@"
