"""Two gateways against one Triton, side by side: the package in `--source DIR` (an earlier checkout) and this
checkout's, loaded in turn (A B, B A, ...) with v2 binary requests, so a change's effect on the gateway's CPU per
request is read in one sitting on a noisy machine rather than across runs.

Usage: .venv/bin/python scripts/bench/gateway_ab.py --source DIR [--rounds 6] [--concurrency 16] [--seconds 3] [--coalesce]

Prints one line per load and, per gateway, the median and range of its CPU per request, of that share of
Triton's, of req/s and of p99 (and the median p50). Check the harness by pointing --source at a copy made slower on purpose.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # scripts/: local_servers.py
from gateway import measure, start_demo_triton, start_gateway, v2_caller
from local_servers import stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="the folder whose controlplane/ is gateway A")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--coalesce", action="store_true", help="both gateways group requests that are ready together")
    args = parser.parse_args()
    if not (args.source / "controlplane").is_dir():
        parser.error(f"--source {args.source}: no controlplane/ package there")
    work, servers, triton = start_demo_triton("mlctl-gw-ab-", "ab")
    gateways = {}
    try:
        gateways["A (source)"] = start_gateway(triton, work / "log-a", 1, args.source.resolve(), "http", args.coalesce)
        gateways["B (this checkout)"] = start_gateway(triton, work / "log-b", 1, None, "http", args.coalesce)
        rows: dict[str, list[dict]] = {name: [] for name in gateways}
        for round_ in range(args.rounds):
            for name in list(gateways)[::1 if round_ % 2 == 0 else -1]:
                proc, url = gateways[name]
                row = asyncio.run(measure(lambda u=url: v2_caller(u, True), args.concurrency, args.seconds,
                                          {"gateway": proc.pid, "triton": triton.pid}))
                rows[name].append(row)
                print(f"{name}: {row['requests_per_s']} req/s, gateway {row['gateway_cpu_ms_per_request']} ms/req, "
                      f"Triton {row['triton_cpu_ms_per_request']} ms/req", flush=True)
        for name, measured in rows.items():
            gateway = [r["gateway_cpu_ms_per_request"] for r in measured]
            share = [r["gateway_cpu_ms_per_request"] / r["triton_cpu_ms_per_request"] for r in measured]
            rate = [r["requests_per_s"] for r in measured]
            p50, p99 = [r["p50_ms"] for r in measured], [r["p99_ms"] for r in measured]
            print(f"{name}: gateway CPU {statistics.median(gateway):.3f} ms/req ({min(gateway):.3f}-{max(gateway):.3f}), "
                  f"of Triton's {statistics.median(share):.0%} ({min(share):.0%}-{max(share):.0%}), "
                  f"{statistics.median(rate):.0f} req/s ({min(rate):.0f}-{max(rate):.0f}), "
                  f"p50 {statistics.median(p50):.2f} ms, p99 {statistics.median(p99):.2f} ms ({min(p99):.2f}-{max(p99):.2f})")
    finally:
        for proc, _ in gateways.values():
            stop(proc, timeout_s=30)
        servers.stop("ab", grace_s=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
