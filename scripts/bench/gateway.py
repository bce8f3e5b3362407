"""The gateway's cost against direct Triton, in one run on one machine.

The digits classifier, one row per request, closed loop, concurrency sweep. Paths:
  direct Triton gRPC              tritonclient.grpc.aio straight to Triton
  direct Triton HTTP binary/JSON  tritonclient.http.aio straight to Triton's HTTP port (the baseline: the same
                                  client and protocol as the gateway's v2 rows, only the URL differs)
  gateway v2 binary               tritonclient.http.aio to the gateway, binary tensors in and out
  gateway v2 JSON                 tritonclient.http.aio to the gateway, JSON tensors in and out
  gateway v1 JSON                 aiohttp POSTs of the simple JSON route
  ..., coalesced                  the same through a second gateway started with --coalesce (requests ready
                                  together go to Triton as one; `--paths binary-coalesced,json-coalesced`)
The gateways log every prediction (Parquet). Each row reports throughput, p50/p99, and the CPU time per
request of the gateway (all its processes) and of Triton (tritonserver plus its Python stubs), read from
/proc/<pid>/stat around the run, and of the load generator (this process: it shares the cores); the gateway
rows add the p50 they add and the throughput they keep against direct HTTP with the same payloads (the v1 route
against direct JSON), the throughput kept against direct gRPC, and their CPU per request as a share of Triton's,
both of Triton's in the same run and of Triton's when it serves the same payloads directly.

Usage: .venv/bin/python scripts/bench/gateway.py [--seconds 4] [--concurrency 1,4,16,64] [--workers 1] [--upstream http]
                                                 [--paths binary,binary-coalesced,json,json-coalesced,v1]
                                                 [--source DIR] [--out bench-out]
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from controlplane.readiness import free_port

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # scripts/: local_servers.py
from common import load_arguments, summary_row, tree_cpu_seconds, write_json
from local_servers import start_listening, stop, triton_options

from controlplane.triton.load import run_async

KEY = "bench-key"
COALESCED = "-coalesced"  # a path served by a second gateway, started with --coalesce
ROW = np.random.default_rng(0).random((1, 64), dtype=np.float32)


def direct_caller(url: str):
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("pixels", [1, 64], "FP32")
    tensor.set_data_from_numpy(ROW)

    async def call() -> str:
        await client.infer("digits", [tensor])
        return ""

    return call, client.close


def v2_caller(url: str, binary: bool):
    import tritonclient.http.aio as httpclient

    client = httpclient.InferenceServerClient(url.removeprefix("http://"), conn_limit=256)
    tensor = httpclient.InferInput("pixels", [1, 64], "FP32")
    tensor.set_data_from_numpy(ROW, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]

    async def call() -> str:
        result = await client.infer("digits", [tensor], outputs=outputs, headers={"X-API-Key": KEY})
        return result.get_response()["model_version"]

    return call, client.close


def v1_caller(url: str):
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), headers={"X-API-Key": KEY})
    body = json.dumps({"inputs": {"pixels": ROW.round(4).tolist()}})

    async def call() -> str:
        async with session.post(f"{url}/v1/models/digits/predict", data=body,
                                headers={"Content-Type": "application/json"}) as response:
            response.raise_for_status()
            return (await response.json())["version"]

    return call, session.close


async def measure(make, concurrency: int, seconds: float, pids: dict[str, int]) -> dict:
    """A closed-loop run of `make()`'s caller, with the CPU seconds each server tree spent during it."""
    call, close = make()
    try:
        await call()  # connect and warm up outside the measurement
        before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        started, client_cpu = time.monotonic(), time.process_time()
        result = await run_async(lambda _: call, concurrency, seconds)
        client_cpu = time.process_time() - client_cpu
        after = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    finally:
        await close()
    served = len(result.records) - result.failures
    row = summary_row(result)
    row["requests"] = served
    row["wall_s"] = round(time.monotonic() - started, 2)
    for name in pids:
        row[f"{name}_cpu_ms_per_request"] = round((after[name] - before[name]) * 1000 / served, 4) if served else None
    # the load generator shares the cores: its own cost per request bounds what the servers can be given
    row["client_cpu_ms_per_request"] = round(client_cpu * 1000 / served, 4) if served else None
    return row


def compare(row: dict, base: dict, grpc: dict) -> None:
    """What the gateway adds and keeps at the same concurrency against direct Triton: `base` with the same client
    and protocol (tritonclient.http to Triton's own HTTP port: only the URL differs), `grpc` with tritonclient's
    gRPC client."""
    if row["p50_ms"] is not None and base["p50_ms"] is not None:
        row["p50_added_ms"] = round(row["p50_ms"] - base["p50_ms"], 3)
    row["throughput_kept"] = round(row["requests_per_s"] / base["requests_per_s"], 3) if base["requests_per_s"] else None
    row["throughput_kept_vs_grpc"] = round(row["requests_per_s"] / grpc["requests_per_s"], 3) if grpc["requests_per_s"] else None
    gateway, triton = row.get("gateway_cpu_ms_per_request"), row.get("triton_cpu_ms_per_request")
    row["gateway_cpu_share_of_triton"] = round(gateway / triton, 3) if gateway is not None and triton else None
    direct = base.get("triton_cpu_ms_per_request")  # what Triton costs per request served without the gateway
    row["gateway_cpu_share_of_direct_triton"] = round(gateway / direct, 3) if gateway is not None and direct else None


def start_gateway(triton, log: Path, workers: int, source: Path | None, upstream: str, coalesce: bool = False):
    """`mlctl gateway serve`; with `source`, the package found there (an earlier checkout, for before/after)."""
    port = free_port()
    command = [sys.executable, "-m", "controlplane.cli.main", "gateway", "serve", "--port", str(port), "--triton-url", triton.grpc_url,
               "--log", str(log), *(["--workers", str(workers)] if workers > 1 else []),
               *(["--triton-http-url", triton.http_url] if upstream == "http" else []), *(["--coalesce"] if coalesce else [])]
    env = {**os.environ, "MLCTL_GATEWAY_ADMIN_KEYS": KEY, **({"PYTHONPATH": str(source)} if source else {})}
    # `python -m` puts the working directory first on the path: run from `source`, or this checkout wins over it
    proc = start_listening(command, port, "gateway", timeout_s=60, env=env, cwd=str(source) if source else None)
    return proc, f"http://127.0.0.1:{port}"


def sweep(args, triton, gateways: dict[bool, tuple[int, str]]) -> list[dict]:
    """The concurrency sweep; `gateways`: coalescing or not -> (pid, url) of the gateway serving those paths."""
    results = []
    for c in args.concurrency:
        pids = {"gateway": next(iter(gateways.values()))[0], "triton": triton.pid}
        grpc = {"path": "direct Triton gRPC", "concurrency": c,
                **asyncio.run(measure(lambda: direct_caller(triton.grpc_url), c, args.seconds, pids))}
        results.append(grpc)
        print(json.dumps(grpc), flush=True)
        bases = {}
        for binary in sorted({key.startswith("binary") for key in args.paths.split(",")}, reverse=True):
            bases[binary] = {"path": f"direct Triton HTTP {'binary' if binary else 'JSON'}", "concurrency": c,
                             **asyncio.run(measure(lambda b=binary: v2_caller(triton.http_url, b), c, args.seconds, pids))}
            results.append(bases[binary])
            print(json.dumps(bases[binary]), flush=True)
        for key in args.paths.split(","):
            kind, coalesced = key.removesuffix(COALESCED), key.endswith(COALESCED)
            pid, url = gateways[coalesced]
            name, make = {"binary": ("gateway v2 binary", lambda u=url: v2_caller(u, True)),
                          "json": ("gateway v2 JSON", lambda u=url: v2_caller(u, False)),
                          "v1": ("gateway v1 JSON", lambda u=url: v1_caller(u))}[kind]
            row = {"path": name + (", coalesced" if coalesced else ""), "concurrency": c, "workers": args.workers,
                   "upstream": args.upstream, **asyncio.run(measure(make, c, args.seconds, {"gateway": pid, "triton": triton.pid}))}
            compare(row, bases[kind == "binary"], grpc)
            results.append(row)
            print(json.dumps(row), flush=True)
    return results


def start_demo_triton(prefix: str, name: str, hidden: int = 64, depth: int = 1):
    """(scratch folder, LocalServers, the running server): the digits demo (`depth` hidden layers of `hidden`)
    published in a scratch repository and served by a local Triton named `name`; stop it with servers.stop(name)."""
    from controlplane.demo import digits as demo
    from controlplane.model.config import ServingOptions
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.server.local import LocalServers

    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "repo").mkdir()
    repo = Repository(open_store(str(work / "repo")))
    demo.publish_demo_versions(repo, "digits", (0,), work / "exports", ServingOptions(max_queue_delay_us=500),
                               hidden=hidden, depth=depth)
    servers = LocalServers(work / "home")
    return work, servers, servers.start(triton_options(repo.uri, name))


def main() -> int:
    parser = load_arguments()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--paths", default="binary,binary-coalesced,json,json-coalesced,v1")
    parser.add_argument("--upstream", default="http", help="how the gateway asks Triton: http or grpc")
    parser.add_argument("--source", type=Path, default=None, help="serve the gateway of the package in this folder")
    args = parser.parse_args()
    paths = args.paths.split(",")
    unknown = [p for p in paths if p.removesuffix(COALESCED) not in ("binary", "json", "v1")]
    if unknown:
        parser.error(f"--paths: unknown {unknown}; choose among binary, json, v1, each optionally with {COALESCED}")
    work, servers, triton = start_demo_triton("mlctl-gw-bench-", "gw")
    started = {}
    try:
        for coalesced in sorted({p.endswith(COALESCED) for p in paths}):  # a gateway per kind the paths ask for
            proc, url = start_gateway(triton, work / f"log-{int(coalesced)}", args.workers, args.source, args.upstream, coalesced)
            started[coalesced] = (proc, url)
        results = sweep(args, triton, {k: (proc.pid, url) for k, (proc, url) in started.items()})
    finally:
        for proc, _ in started.values():
            stop(proc, timeout_s=30)
        servers.stop("gw", grace_s=10)
        shutil.rmtree(work, ignore_errors=True)  # the scratch repository, exports and logs
    write_json(args.out, "gateway.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
