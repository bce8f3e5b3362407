"""What any process between the clients and Triton costs per request, against the gateway: the floor under its
CPU figure, measured against the same real Triton in one sitting.

    direct          tritonclient.http.aio straight to Triton (no relay)
    python relay    a bare Python relay on uvloop and httptools: each request written as it came to a kept
                    connection to Triton, Triton's answer written back as it came. No key check, no validation,
                    no routing, no ids, no log, no metrics: the least a Python gateway can cost here
    nginx relay     nginx as a plain reverse proxy with kept upstream connections: what a compiled relay costs
                    (measured when an nginx binary is found, else reported as not measured)
    gateway         `mlctl gateway serve` with its prediction log (`--coalesce` to start it with coalescing)

The load is the v2 binary client of scripts/bench/gateway.py (one row per request, closed loop); the paths take
turns, their order reversed every round. Per path: req/s, the relay's CPU per request (its process tree, from
/proc), Triton's in the same load, and the share of the one in the other (median and range over the rounds).

A heavier model (`--hidden 1024 --depth 4`: the same digits classifier, wider and deeper) costs Triton more per
request and the relays the same: the share is a property of the model as much as of the relay.

Usage: .venv/bin/python scripts/bench/gateway_relay.py [--rounds 3] [--seconds 4] [--concurrency 16] [--coalesce]
                                                       [--hidden 64] [--depth 1] [--out bench-out]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # scripts/: local_servers.py
from common import write_json
from gateway import measure, start_demo_triton, start_gateway, v2_caller
from local_servers import start_listening, stop

from controlplane.readiness import free_port

NGINX_CONF = """worker_processes 1; daemon off; pid {work}/nginx.pid; error_log {work}/nginx.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream triton {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://triton; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def serve_relay(port: int, upstream: str) -> None:
    """The bare Python relay (run in its own process: `--serve-relay PORT HOST:PORT`)."""
    import httptools
    import uvloop

    host, _, upstream_port = upstream.rpartition(":")
    idle: list = []

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport, self.parser, self.chunks, self.answer = transport, httptools.HttpResponseParser(self), [], None

        def data_received(self, data: bytes) -> None:
            self.chunks.append(data)
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            data, self.chunks = b"".join(self.chunks), []
            self.answer.set_result(data)

        def send(self, data: bytes) -> asyncio.Future:
            self.answer = asyncio.get_running_loop().create_future()
            self.transport.write(data)
            return self.answer

    class Client(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport, self.parser, self.chunks = transport, httptools.HttpRequestParser(self), []

        def data_received(self, data: bytes) -> None:
            self.chunks.append(data)
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            data, self.chunks = b"".join(self.chunks), []
            asyncio.get_running_loop().create_task(self.relay(data))

        async def relay(self, data: bytes) -> None:
            if idle:
                connection = idle.pop()
            else:
                _, connection = await asyncio.get_running_loop().create_connection(Upstream, host, int(upstream_port))
            answer = await connection.send(data)
            idle.append(connection)
            self.transport.write(answer)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def start_relays(work: Path, triton, coalesce: bool) -> dict[str, tuple[subprocess.Popen | None, str]]:
    upstream = triton.http_url.removeprefix("http://")
    relays: dict[str, tuple[subprocess.Popen | None, str]] = {"direct": (None, triton.http_url)}
    port = free_port()
    relays["python relay"] = (start_listening([sys.executable, str(Path(__file__).resolve()), "--serve-relay", str(port), upstream],
                                              port, "python relay", timeout_s=30), f"http://127.0.0.1:{port}")
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx:
        port = free_port()
        conf = work / "nginx.conf"
        conf.write_text(NGINX_CONF.format(work=work, upstream=upstream, port=port))
        relays["nginx relay"] = (start_listening([nginx, "-c", str(conf), "-p", str(work)], port, "nginx", timeout_s=30),
                                 f"http://127.0.0.1:{port}")
    else:
        print("nginx relay: not measured (no nginx binary found)", flush=True)
    name = "gateway, coalesced" if coalesce else "gateway"
    relays[name] = start_gateway(triton, work / "log", 1, None, "http", coalesce)
    return relays


def summarize(name: str, rows: list[dict]) -> dict:
    rate = [r["requests_per_s"] for r in rows]
    triton = [r["triton_cpu_ms_per_request"] for r in rows]
    summary = {"path": name, "rounds": len(rows), "requests_per_s": statistics.median(rate), "requests_per_s_range": [min(rate), max(rate)],
               "triton_cpu_ms_per_request": statistics.median(triton), "triton_cpu_ms_per_request_range": [min(triton), max(triton)]}
    if rows[0].get("relay_cpu_ms_per_request") is not None:
        relay = [r["relay_cpu_ms_per_request"] for r in rows]
        share = [a / b for a, b in zip(relay, triton)]
        summary |= {"relay_cpu_ms_per_request": statistics.median(relay), "relay_cpu_ms_per_request_range": [min(relay), max(relay)],
                    "relay_share_of_triton": round(statistics.median(share), 3), "relay_share_of_triton_range": [round(min(share), 3), round(max(share), 3)]}
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--coalesce", action="store_true", help="start the gateway with --coalesce")
    parser.add_argument("--hidden", type=int, default=64, help="the demo classifier's hidden width")
    parser.add_argument("--depth", type=int, default=1, help="the demo classifier's hidden layers")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--serve-relay", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_relay:
        serve_relay(int(args.serve_relay[0]), args.serve_relay[1])
        return 0
    work, servers, triton = start_demo_triton("mlctl-gw-relay-", "relay", args.hidden, args.depth)
    relays: dict = {}
    try:
        relays = start_relays(work, triton, args.coalesce)
        rows: dict[str, list[dict]] = {name: [] for name in relays}
        for round_ in range(args.rounds):
            for name in list(relays)[::1 if round_ % 2 == 0 else -1]:
                proc, url = relays[name]
                pids = {"triton": triton.pid, **({"relay": proc.pid} if proc is not None else {})}
                row = asyncio.run(measure(lambda u=url: v2_caller(u, True), args.concurrency, args.seconds, pids))
                rows[name].append(row)
                print(f"{name}: {row['requests_per_s']} req/s, relay {row.get('relay_cpu_ms_per_request')} ms/req, "
                      f"Triton {row['triton_cpu_ms_per_request']} ms/req", flush=True)
        summaries = [summarize(name, measured) for name, measured in rows.items()]
    finally:
        for name, (proc, _) in relays.items():
            if proc is not None:
                stop(proc, timeout_s=30)
        servers.stop("relay", grace_s=10)
        shutil.rmtree(work, ignore_errors=True)
    for s in summaries:
        line = (f"{s['path']:20s} c={args.concurrency} {s['requests_per_s']:.0f} req/s ({s['requests_per_s_range'][0]:.0f}-"
                f"{s['requests_per_s_range'][1]:.0f}), Triton {s['triton_cpu_ms_per_request']:.3f} ms/req")
        if "relay_cpu_ms_per_request" in s:
            low, high = s["relay_share_of_triton_range"]
            line += (f", relay {s['relay_cpu_ms_per_request']:.3f} ms/req ({s['relay_cpu_ms_per_request_range'][0]:.3f}-"
                     f"{s['relay_cpu_ms_per_request_range'][1]:.3f}) = {s['relay_share_of_triton']:.0%} of Triton's ({low:.0%}-{high:.0%})")
        print(line)
    write_json(args.out, "gateway_relay.json", {"concurrency": args.concurrency, "seconds": args.seconds, "hidden": args.hidden,
                                                "depth": args.depth, "rows": rows, "summary": summaries})
    return 0


if __name__ == "__main__":
    sys.exit(main())
