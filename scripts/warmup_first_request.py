"""The first request after a switch, with and without warm-up, and a server's start to ready.

One local replica; `cold`, `random` and `reference` are the same two versions of the demo classifier, published
without `model_warmup`, with a warm-up on random inputs, and with one on the version's reference sample. Each round
switches each to the other version and times the first request right after the switch returns. Usage: .venv/bin/python scripts/warmup_first_request.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from local_servers import scratch_repository, triton_options

from controlplane.demo import digits as demo
from controlplane.model.config import ServingOptions
from controlplane.quality.reference import ReferenceSample
from controlplane.release.lifecycle import Lifecycle
from controlplane.triton.client import TritonClient
from controlplane.triton.server.local import LocalServers
from controlplane.triton.targets import Targets


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    work, repo = scratch_repository("mlctl-warmup-")
    features = np.random.default_rng(1).random((32, 64), dtype=np.float32)
    np.savez(work / "reference.npz", features=features, predicted=np.zeros(32, np.int64))
    demo.publish_demo_versions(repo, "cold", (0, 1), work / "e1", ServingOptions(warmup=False))
    demo.publish_demo_versions(repo, "random", (0, 1), work / "e2", ServingOptions())
    demo.publish_demo_versions(repo, "reference", (0, 1), work / "e3", ServingOptions(),
                               ReferenceSample.read(work / "reference.npz"))
    servers = LocalServers(work / "home")
    t0 = time.monotonic()
    state = servers.start(triton_options(repo.uri, "w", channel="production"))
    start_to_ready_s = time.monotonic() - t0
    rows = {demo.INPUT_NAME: np.random.default_rng(0).random((1, 64), dtype=np.float32)}
    first: dict[str, list[float]] = {"cold": [], "random": [], "reference": []}
    try:
        lifecycle = Lifecycle(repo, Targets({"production": (state.grpc_url,)}))
        with TritonClient(state.grpc_url) as client:
            for model in first:
                lifecycle.promote(model, 1, "production", create_channel=True)
            for round_ in range(args.rounds):
                version = 2 if round_ % 2 == 0 else 1
                for model, times in first.items():
                    lifecycle.promote(model, version, "production")
                    t = time.perf_counter()
                    client.infer(model, rows)
                    times.append((time.perf_counter() - t) * 1000)
    finally:
        servers.stop("w", grace_s=10)
    result = {"start_to_ready_s": round(start_to_ready_s, 2), "rounds": args.rounds,
              **{f"first_request_ms_{m}_median": round(float(np.median(v)), 2) for m, v in first.items()},
              **{f"first_request_ms_{m}_max": round(max(v), 2) for m, v in first.items()}}
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:32s} {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
