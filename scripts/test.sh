#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite against real servers that the tests start and stop:
# tritonserver (from the nvidia-pytriton wheel), Prometheus (Debian's package) and an S3-compatible server (moto).
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the tests use: prometheus/promtool (metrics tests), chromium and its driver (HTML report
# and console tests render pages in a real headless browser).
missing=()
for tool in prometheus promtool chromium chromedriver; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages for ${missing[*]}" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq prometheus chromium chromium-driver >/dev/null
fi
bash scripts/setup.sh
bash scripts/kubectl.sh
# The lint the PR workflow runs (pyflakes and syntax errors), so a clean run here is a clean run there.
.venv/bin/ruff check --quiet --select F,E9 --line-length 200 controlplane scripts tests
# Two workers, each taking whole test files (a module's servers stay with its tests): most tests wait on servers,
# so two files at a time fit the 2 cores. MLCTL_TEST_WORKERS=0 runs everything in this one process.
exec .venv/bin/python -m pytest -n "${MLCTL_TEST_WORKERS:-2}" --dist loadfile --durations=15 "$@"
