"""The gateway's cost: gateway -> Triton against direct Triton gRPC at equal concurrency, in one run.

The digits classifier, one row per request, closed loop; the gateway logs every prediction (Parquet).
Reports p50/p99 and throughput per path, the p50 the gateway adds and the throughput it keeps.

Usage: .venv/bin/python scripts/bench/gateway.py [--seconds 4] [--concurrency 1,4,16,64] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import json_path, triton_path  # noqa: E402  (the same load generator as serving.py)

MLCTL = str(Path(sys.executable).parent / "mlctl")
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    from controlplane.triton.server.local import LocalServers, ServerOptions

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlctl-gw-bench-"))
    (work / "repo").mkdir()
    repo = Repository(open_store(str(work / "repo")))
    demo.publish_demo_versions(repo, "digits", (0,), work / "exports", ServingOptions(max_queue_delay_us=500))
    servers = LocalServers(work / "home")
    state = servers.start(ServerOptions(repository=repo.uri, name="gw", http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()))
    port = free_port()
    gateway = subprocess.Popen([MLCTL, "gateway", "serve", "--port", str(port), "--triton-url", state.grpc_url, "--log", str(work / "log")],
                               env={**os.environ, "MLCTL_GATEWAY_ADMIN_KEYS": KEY})
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for c in [int(v) for v in args.concurrency.split(",")]:
            a = {"path": "direct Triton gRPC", "concurrency": c, **direct(state.grpc_url, c, args.seconds)}
            b = {"path": "gateway -> Triton", "concurrency": c, **through_gateway(url, c, args.seconds)}
            b["p50_added_ms"] = round(b["p50_ms"] - a["p50_ms"], 3)
            b["throughput_kept"] = round(b["requests_per_s"] / a["requests_per_s"], 3)
            results += [a, b]
            print(json.dumps(a), flush=True)
            print(json.dumps(b), flush=True)
    finally:
        gateway.terminate()
        gateway.wait(timeout=30)
        servers.stop("gw", grace_s=10)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gateway.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
