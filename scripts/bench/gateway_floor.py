"""What a Python server costs per request before the gateway does anything: the floor under its CPU figures.

Each server answers every request with the same canned KServe v2 binary answer (the digits model's shape),
without reading Triton or logging; the load is tritonclient's own aio client (HTTP, binary tensors; gRPC for
the gRPC server), closed loop, one row per request. Reports the server's CPU per request (its process tree,
from /proc) and the load generator's (this process).

    uvicorn        a plain ASGI app on uvicorn (httptools, uvloop), as `mlctl gateway serve` runs it
    granian-asgi   the same ASGI app on granian (when installed)
    granian-rsgi   granian's own RSGI interface (when installed)
    httptools      a bare asyncio protocol over httptools on uvloop: no ASGI, one task per request
    grpc           a grpc.aio server of Triton's GRPCInferenceService (the gRPC front it would take)

Usage: .venv/bin/python scripts/bench/gateway_floor.py [--servers uvicorn,httptools,grpc] [--concurrency 16] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))
from common import tree_cpu_seconds

ROW = np.random.default_rng(0).random((1, 64), dtype=np.float32)


def canned() -> tuple[bytes, bytes]:
    """(JSON header, whole body) of a v2 binary answer of 10 float32 scores."""
    import orjson

    header = orjson.dumps({"model_name": "digits", "model_version": "1", "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 10], "parameters": {"binary_data_size": 40}}]})
    return header, header + np.zeros(10, np.float32).tobytes()


HEADER, BODY = canned()


async def asgi_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/octet-stream"), (b"inference-header-content-length", str(len(HEADER)).encode()),
        (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


class RsgiApp:
    async def __rsgi__(self, scope, protocol) -> None:
        await protocol()
        protocol.response_bytes(200, [("content-type", "application/octet-stream"),
                                      ("inference-header-content-length", str(len(HEADER)))], BODY)


rsgi_app = RsgiApp()


def serve_httptools(port: int) -> None:
    import httptools
    import uvloop

    answer = (b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ninference-header-content-length: "
              + str(len(HEADER)).encode() + b"\r\ncontent-length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)

    class Protocol(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport, self.parser = transport, httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            asyncio.ensure_future(self.answer())

        async def answer(self) -> None:
            self.transport.write(answer)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


def serve_grpc(port: int) -> None:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    scores = np.zeros(10, np.float32).tobytes()

    class Service(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            answer = service_pb2.ModelInferResponse(model_name=request.model_name, model_version="1")
            answer.outputs.add(name="probabilities", datatype="FP32", shape=[1, 10])
            answer.raw_output_contents.append(scores)
            return answer

    async def main() -> None:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Service(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def server_command(kind: str, port: int) -> list[str]:
    here = ["--app-dir", str(HERE.parent)]
    module = HERE.stem
    if kind == "uvicorn":
        return [sys.executable, "-m", "uvicorn", f"{module}:asgi_app", *here, "--port", str(port), "--log-level", "warning",
                "--no-access-log", "--http", "httptools", "--loop", "uvloop"]
    if kind.startswith("granian-"):
        interface = kind.removeprefix("granian-")
        return [sys.executable, "-m", "granian", "--interface", interface, "--port", str(port), "--log-level", "warning",
                "--no-ws", "--loop", "uvloop", "--working-dir", str(HERE.parent), f"{module}:{interface}_app"]
    return [sys.executable, str(HERE), "--serve", kind, "--port", str(port)]


def caller(kind: str, port: int):
    if kind == "grpc":
        import tritonclient.grpc.aio as grpcclient

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = grpcclient.InferInput("pixels", [1, 64], "FP32")
        tensor.set_data_from_numpy(ROW)
        outputs = None
    else:
        import tritonclient.http.aio as httpclient

        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", conn_limit=256)
        tensor = httpclient.InferInput("pixels", [1, 64], "FP32")
        tensor.set_data_from_numpy(ROW, binary_data=True)
        outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=True)]

    async def call() -> str:
        await client.infer("digits", [tensor], outputs=outputs)
        return ""

    return call, client.close


async def measure(kind: str, port: int, pid: int, concurrency: int, seconds: float) -> dict:
    from controlplane.triton.load import run_async

    call, close = caller(kind, port)
    try:
        await call()
        before, client = tree_cpu_seconds(pid), time.process_time()
        result = await run_async(lambda _: call, concurrency, seconds)
        server, client = tree_cpu_seconds(pid) - before, time.process_time() - client
    finally:
        await close()
    served = len(result.records) - result.failures
    return {"server": kind, "concurrency": concurrency, "requests_per_s": round(served / seconds, 1), "failures": result.failures,
            "server_cpu_ms_per_request": round(server * 1000 / served, 4) if served else None,
            "client_cpu_ms_per_request": round(client * 1000 / served, 4) if served else None}


def wait_listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"no server on port {port} after {timeout_s} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="uvicorn,httptools,grpc")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        {"httptools": serve_httptools, "grpc": serve_grpc}[args.serve](args.port)
        return 0
    from controlplane.readiness import free_port

    for kind in args.servers.split(","):
        port = free_port()
        server = subprocess.Popen(server_command(kind, port))
        try:
            wait_listening(port)
            print(json.dumps(asyncio.run(measure(kind, port, server.pid, args.concurrency, args.seconds))), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
