"""Overload that fails fast: a model with a queue policy, driven open-loop at twice its saturation rate.

One local replica serves the demo classifier with `max_queue_size` set (Triton rejects beyond it at once). A
closed loop of `--clients` (at most `max_queue_size`, so none is rejected) finds the saturation rate; an open loop then offers twice that for `--seconds`.
Latencies count from each request's scheduled time (a late request's wait is in it). Reports the accepted
requests' p99 against the budget and the rejects' latency against REJECT_FAST_MS.
`--format torchscript --instance-kind gpu` serves the model as TorchScript on the GPU (scripts/bench/gpu.sh --hotswap);
`--out FILE` writes the result as JSON there too. `--gateway-max-in-flight N` publishes the model without a queue
policy and drives the load through `mlctl gateway serve --max-in-flight N` instead (the gateway's predict route; the
open loop on one asyncio loop over `--in-flight` keep-alive connections, so no client thread waits for the GIL in
what is timed): the gateway refuses beyond N in flight with 429.

Usage: .venv/bin/python scripts/overload.py [--seconds 5] [--max-queue-size 4] [--budget-ms 50] [--json]
       [--format onnx|torchscript] [--instance-kind cpu|gpu] [--hidden 64 --depth 1] [--gateway-max-in-flight N]
       [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from local_servers import start_listening, stop, triton_options

from controlplane.demo import digits as demo
from controlplane.model.config import ServingOptions
from controlplane.processes import group_members
from controlplane.readiness import free_port
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.load import LoadResult, Record, run_open_loop, run_threads
from controlplane.triton.server.local import LocalServers

GATEWAY_KEY = "overload-drill-key"
REJECT_FAST_MS = 5.0  # the goal: the excess is refused in under this
QUEUE_FULL = "maximum queue size"  # Triton's message for a reject by the queue policy


GATEWAY_REFUSED = "http 429"


def _rejected(error: str) -> bool:
    return QUEUE_FULL in error.lower() or GATEWAY_REFUSED in error.lower()


def start_gateway(triton_grpc_url: str, max_in_flight: int):
    """`mlctl gateway serve --max-in-flight N` in front of the replica (no prediction log: the drill measures
    admission, not logging); (process, port) once it listens."""
    port = free_port()
    env = {**os.environ, "MLCTL_GATEWAY_PREDICT_KEYS": GATEWAY_KEY, "MLCTL_GATEWAY_ADMIN_KEYS": GATEWAY_KEY}
    mlctl = str(Path(sys.executable).parent / "mlctl")
    return start_listening([mlctl, "gateway", "serve", "--port", str(port), "--triton-url", triton_grpc_url,
                            "--max-in-flight", str(max_in_flight)], port, "the gateway", env=env), port


class GatewayClient:
    """One keep-alive HTTP connection to the gateway's predict route; a refusal raises 'http 429: ...'."""

    def __init__(self, port: int, rows: dict) -> None:
        import http.client

        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.body = json.dumps({"inputs": {name: array.tolist() for name, array in rows.items()}}).encode()
        self.headers = {"Content-Type": "application/json", "X-API-Key": GATEWAY_KEY}

    def predict(self) -> str:
        self.connection.request("POST", "/v1/models/digits/predict", self.body, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"http {response.status}: {data[:200]!r}")
        return json.loads(data)["version"]

    def close(self) -> None:
        self.connection.close()


def renice_group(leader: int, niceness: int) -> None:
    """Every thread of every process in `leader`'s group at `niceness` (Linux keeps a niceness per thread)."""
    for pid in group_members(leader):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                os.setpriority(os.PRIO_PROCESS, int(task.name), niceness)
            except (ProcessLookupError, PermissionError):
                pass


def gateway_open_loop(port: int, body: bytes, rate_per_s: float, seconds: float, connections: int) -> LoadResult:
    """The open loop through the gateway on one asyncio loop (no client threads, so no GIL queue in what is
    timed): requests at `rate_per_s` for `seconds` over up to `connections` keep-alive connections, each request
    the same predict `body`; a request finding every connection busy waits for one, and its wait counts."""
    import asyncio

    request = (f"POST /v1/models/digits/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {GATEWAY_KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    records: list[Record] = []

    async def exchange(reader, writer) -> tuple[int, bytes]:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        return status, await reader.readexactly(length)

    async def one(index: int, scheduled: float, idle: asyncio.Queue) -> None:
        reader, writer = await idle.get()
        try:
            status, data = await exchange(reader, writer)
            error = "" if status == 200 else f"http {status}: {data[:200]!r}"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        records.append(Record(index, "http", "", scheduled, time.monotonic(), "", error))
        idle.put_nowait((reader, writer))

    async def run() -> float:
        idle: asyncio.Queue = asyncio.Queue()
        for _ in range(connections):
            idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
        loop, tasks = asyncio.get_running_loop(), []
        interval, started = 1.0 / rate_per_s, time.monotonic()
        for n in range(max(1, int(rate_per_s * seconds))):
            scheduled = started + n * interval
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            tasks.append(loop.create_task(one(n, scheduled, idle)))
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        while not idle.empty():
            idle.get_nowait()[1].close()
        return elapsed

    elapsed = asyncio.run(run())
    return LoadResult(tuple(sorted(records, key=lambda r: r.start)), elapsed)


def ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def interrupted(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # once: a second signal (a process group's timeout) must not cut the cleanup
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the open-loop run")
    parser.add_argument("--saturation-seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients that find the saturation rate")
    parser.add_argument("--max-queue-size", type=int, default=4)
    parser.add_argument("--budget-ms", type=float, default=50.0, help="p99 the accepted requests must stay within")
    parser.add_argument("--in-flight", type=int, default=64, help="open-loop worker threads")
    parser.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="the model's format")
    parser.add_argument("--instance-kind", default="cpu", choices=("cpu", "gpu"), help="KIND_CPU or KIND_GPU instance")
    parser.add_argument("--hidden", type=int, default=64, help="the classifier's hidden width (64: the demo model)")
    parser.add_argument("--depth", type=int, default=1, help="its hidden layers: wider and deeper make each request cost "
                        "compute, as a real model does, rather than only per-request handling")
    parser.add_argument("--gateway-max-in-flight", type=int, default=0,
                        help="instead of Triton's queue policy, drive the load through `mlctl gateway serve --max-in-flight N` "
                             "(HTTP predict route; the gateway refuses beyond N in flight with 429)")
    parser.add_argument("--triton-nice", type=int, default=0,
                        help="lower the replica's CPU priority by this niceness (every thread of tritonserver and its "
                             "stubs), as a container's lower CPU weight would beside the gateway")
    parser.add_argument("--out", help="write the result (JSON) here too")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)  # a `timeout` still stops the server

    work = Path(tempfile.mkdtemp(prefix="mlctl-overload-"))
    (work / "repo").mkdir()
    repo = Repository(open_store(str(work / "repo")))
    via_gateway = args.gateway_max_in_flight > 0
    options = ServingOptions(max_queue_size=0 if via_gateway else args.max_queue_size, instance_kind=args.instance_kind)
    demo.publish_demo_versions(repo, "digits", (0,), work / "exports", options, fmt=args.format, hidden=args.hidden,
                               depth=args.depth)
    servers = LocalServers(work / "home")
    state = servers.start(triton_options(repo.uri, "overload", models=("digits",)))
    if args.triton_nice:
        renice_group(state.pid, args.triton_nice)
    rows = {demo.INPUT_NAME: np.random.default_rng(0).random((1, 64), dtype=np.float32)}
    gateway = None
    if via_gateway:
        gateway, gateway_port = start_gateway(state.grpc_url, args.gateway_max_in_flight)
        opened = [GatewayClient(gateway_port, rows) for _ in range(max(args.in_flight, args.clients))]
    else:
        # every worker's client is made (and its channel opened) before any timing: only requests are measured
        opened = [TritonClient(state.grpc_url, "grpc", timeout_s=30) for _ in range(max(args.in_flight, args.clients))]

    def make_caller(index: int):
        client = opened[index]
        return client.predict if via_gateway else (lambda: client.infer("digits", rows).version)

    try:
        # the saturation rate: a closed loop the queue never overflows (at most max_queue_size waiting), warmed first
        concurrency = min(args.clients, args.max_queue_size)
        run_threads(make_caller, concurrency, 1.0)
        closed = run_threads(make_caller, concurrency, args.saturation_seconds)
        saturation = closed.requests_per_s
        if via_gateway:
            offered = gateway_open_loop(gateway_port, opened[0].body, 2 * saturation, args.seconds, args.in_flight)
        else:
            offered = run_open_loop(make_caller, 2 * saturation, args.seconds, max_in_flight=args.in_flight)
    finally:
        for client in opened:
            client.close()
        if gateway is not None:
            stop(gateway)
        servers.stop("overload", grace_s=10)
        if args.out:  # the server's log tail beside the result
            Path(args.out).with_suffix(".server.log").write_text(Path(state.log_path).read_text(errors="replace")[-100_000:])
    accepted = [r.latency_s for r in offered.records if not r.error]
    rejected = [r.latency_s for r in offered.records if r.error and _rejected(r.error)]
    other = [r.error for r in offered.records if r.error and not _rejected(r.error)]
    result = {
        "format": args.format, "instance_kind": args.instance_kind, "hidden": args.hidden, "depth": args.depth,
        "saturation_rps": round(saturation, 1), "saturation_p99_ms": ms(closed.latencies_s, 99),
        "saturation_failures": closed.failures,
        "offered_rps": round(2 * saturation, 1), "sent": len(offered.records),
        "sent_rps": round(len(offered.records) / offered.elapsed_s, 1),
        "max_queue_size": 0 if via_gateway else args.max_queue_size, "gateway_max_in_flight": args.gateway_max_in_flight,
        "triton_nice": args.triton_nice,
        "budget_ms": args.budget_ms,
        "accepted": len(accepted), "accepted_p50_ms": ms(accepted, 50), "accepted_p99_ms": ms(accepted, 99),
        "rejected": len(rejected), "rejected_p50_ms": ms(rejected, 50), "rejected_p99_ms": ms(rejected, 99),
        "rejected_max_ms": round(max(rejected) * 1000, 2) if rejected else None,
        "other_failures": len(other), "other_failure_examples": other[:3],
    }
    result["accepted_within_budget"] = result["accepted_p99_ms"] is not None and result["accepted_p99_ms"] <= args.budget_ms
    result["rejected_fast"] = result["rejected_p99_ms"] is not None and result["rejected_p99_ms"] < REJECT_FAST_MS
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:24s} {v}" for k, v in result.items()))
    return 0 if result["accepted_within_budget"] and result["rejected_fast"] and not other else 1


if __name__ == "__main__":
    sys.exit(main())
