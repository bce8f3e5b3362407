"""The gateway's cost: gateway -> Triton against direct Triton gRPC at equal concurrency, in one run.

The digits classifier, one row per request, closed loop; the gateway logs every prediction (Parquet).
Reports p50/p99 and throughput per path, the p50 the gateway adds and the throughput it keeps.

Usage: .venv/bin/python scripts/bench/gateway.py [--seconds 4] [--concurrency 1,4,16,64] [--out bench-out]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from controlplane.readiness import free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # scripts/: local_servers.py
from common import load_arguments, write_json  # noqa: E402
from local_servers import start_listening, stop, triton_options  # noqa: E402
from serving import json_path, triton_path  # noqa: E402  (the same load paths as serving.py)

MLCTL = str(Path(sys.executable).parent / "mlctl")
KEY = "bench-key"


def direct(url: str, concurrency: int, seconds: float) -> dict:
    return triton_path(url, "grpc", "digits", 64, concurrency, seconds, input_name="pixels")


def through_gateway(url: str, concurrency: int, seconds: float) -> dict:
    body = {"inputs": {"pixels": np.random.default_rng(0).random((1, 64)).round(4).tolist()}}
    return json_path(f"{url}/v1/models/digits/predict", body, concurrency, seconds, headers={"X-API-Key": KEY})


def main() -> int:
    from controlplane.demo import digits as demo
    from controlplane.model.config import ServingOptions
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.server.local import LocalServers

    args = load_arguments().parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlctl-gw-bench-"))
    (work / "repo").mkdir()
    repo = Repository(open_store(str(work / "repo")))
    demo.publish_demo_versions(repo, "digits", (0,), work / "exports", ServingOptions(max_queue_delay_us=500))
    servers = LocalServers(work / "home")
    state = servers.start(triton_options(repo.uri, "gw"))
    gateway = None
    results = []
    try:
        port = free_port()
        gateway = start_listening([MLCTL, "gateway", "serve", "--port", str(port), "--triton-url", state.grpc_url, "--log", str(work / "log")],
                                  port, "gateway", timeout_s=30, env={**os.environ, "MLCTL_GATEWAY_ADMIN_KEYS": KEY})
        url = f"http://127.0.0.1:{port}"
        for c in args.concurrency:
            a = {"path": "direct Triton gRPC", "concurrency": c, **direct(state.grpc_url, c, args.seconds)}
            b = {"path": "gateway -> Triton", "concurrency": c, **through_gateway(url, c, args.seconds)}
            both = a["p50_ms"] is not None and b["p50_ms"] is not None  # None: no request of that path succeeded
            b["p50_added_ms"] = round(b["p50_ms"] - a["p50_ms"], 3) if both else None
            b["throughput_kept"] = round(b["requests_per_s"] / a["requests_per_s"], 3) if a["requests_per_s"] else None
            results += [a, b]
            print(json.dumps(a), flush=True)
            print(json.dumps(b), flush=True)
    finally:
        if gateway is not None:
            stop(gateway, timeout_s=30)
        servers.stop("gw", grace_s=10)
    write_json(args.out, "gateway.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
