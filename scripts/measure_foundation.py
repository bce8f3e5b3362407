"""Measure the foundation's figures on this machine, in one run:

- `mlctl --help` wall time (median of 10 runs);
- quickstart wall time on a warm venv: a first run (trains, exports, publishes) and a second (reuses);
- server start to ready with the demo models (2 models x 2 versions) loaded (median of 3 starts).

Usage: .venv/bin/python scripts/measure_foundation.py [--json]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controlplane.readiness import free_port

MLCTL = str(Path(sys.executable).parent / "mlctl")
SERVER = ["--name", "quickstart"]  # the server the quickstart starts, restarted below for its start-to-ready time


def timed(args: list[str], cwd: str, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([MLCTL, *args], cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    work = tempfile.mkdtemp(prefix="mlctl-measure-")
    env = {**os.environ, "MLCTL_HOME": f"{work}/home", "MLCTL_REPOSITORY": f"{work}/repo"}
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    figures: dict[str, float | list[float]] = {}
    helps = [timed(["--help"], work, env) for _ in range(10)]
    figures["help_s_median"] = statistics.median(helps)
    figures["help_s_max"] = max(helps)
    try:
        figures["quickstart_first_run_s"] = timed(["quickstart", *ports], work, env)
        figures["quickstart_second_run_s"] = timed(["quickstart", *ports], work, env)
        starts = []
        for _ in range(3):
            subprocess.run([MLCTL, "server", "stop", *SERVER], cwd=work, env=env, check=True, capture_output=True)
            starts.append(timed(["server", "start", *SERVER, *ports], work, env))
        figures["server_start_to_ready_s"] = starts
        figures["server_start_to_ready_s_median"] = statistics.median(starts)
    finally:
        subprocess.run([MLCTL, "server", "stop", *SERVER], cwd=work, env=env, capture_output=True)
    figures = {k: [round(x, 3) for x in v] if isinstance(v, list) else round(v, 3) for k, v in figures.items()}
    figures["machine"] = f"{os.cpu_count()} cpus, {sys.platform}, python {sys.version.split()[0]}"
    if "--json" in sys.argv:
        print(json.dumps(figures, indent=2))
    else:
        for key, value in figures.items():
            print(f"{key:34s} {value}")


if __name__ == "__main__":
    main()
