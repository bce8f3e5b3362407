"""`mlctl perf` against the serving benchmark (serving.py) on the same load point: the demo model on a local
Triton over gRPC with dynamic batching, closed loop, one row per request. The two alternate, `--rounds`
times each, so the machine's drift hits both; the figures should agree within that noise.

Usage: .venv/bin/python scripts/bench/perf_vs_serving.py [--concurrency 16] [--seconds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # scripts/: local_servers.py
sys.path.insert(0, str(HERE))
from local_servers import triton_options
from serving import build, triton_path


def main() -> int:
    from controlplane.export.exporter import ExportRequest, export_model
    from controlplane.model.config import ServingOptions
    from controlplane.model.signature import TensorSpec
    from controlplane.perf.inputs import random_inputs
    from controlplane.perf.measure import PerfSession
    from controlplane.perf.windows import WindowPolicy
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.server.local import LocalServers

    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0, help="serving.py's duration per point")
    parser.add_argument("--window-s", type=float, default=1.0, help="mlctl perf's window")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlctl-perf-bench-"))
    (work / "repo").mkdir()
    repo = Repository(open_store(str(work / "repo")))
    module, width = build("demo")
    bundle = export_model(ExportRequest("bench demo", (TensorSpec("x", "float32", (width,)),), work / "demo", ("y",),
                                        formats=("onnx",), max_batch_size=64), model=module)
    repo.publish(bundle, "demo_dyn", "onnx", ServingOptions(max_queue_delay_us=1000))
    servers = LocalServers(work / "home")
    state = servers.start(triton_options(repo.uri, "bench"))
    rows = []
    try:
        session = PerfSession(state.grpc_url, "demo_dyn", random_inputs(_signature(repo), 1),
                              policy=WindowPolicy(seconds=args.window_s))
        try:
            for round_ in range(args.rounds):
                serving = triton_path(state.grpc_url, "grpc", "demo_dyn", width, args.concurrency, args.seconds)
                rows.append({"round": round_, "tool": "scripts/bench/serving.py", **{k: serving[k] for k in ("requests_per_s", "p50_ms", "p95_ms", "p99_ms", "failures")}})
                print(json.dumps(rows[-1]), flush=True)
                point = session.point("concurrency", args.concurrency)
                rows.append({"round": round_, "tool": "mlctl perf", "requests_per_s": point.requests_per_s, "p50_ms": point.p50_ms,
                             "p95_ms": point.p95_ms, "p99_ms": point.p99_ms, "failures": point.errors, "stable": point.stable,
                             "windows": point.windows})
                print(json.dumps(rows[-1]), flush=True)
        finally:
            session.close()
    finally:
        servers.stop("bench", grace_s=10)
    for tool in ("scripts/bench/serving.py", "mlctl perf"):
        mine = [r for r in rows if r["tool"] == tool]
        print(json.dumps({"tool": tool, **{k: [min(r[k] for r in mine), max(r[k] for r in mine)] for k in ("requests_per_s", "p50_ms", "p99_ms")}}))
    return 0


def _signature(repo):
    from controlplane.model.config import signature_of

    return signature_of(repo.config("demo_dyn"), api=True)


if __name__ == "__main__":
    sys.exit(main())
