"""Serving throughput and latency, side by side in one run on one machine:

  (a) in-process onnxruntime (the ceiling), 1 row per call and 64 rows per call;
  (b) local Triton (mlctl's generated config) over gRPC and HTTP, dynamic batching on and off;
  (c) a naive FastAPI + onnxruntime server, one forward per request.

Closed loop, one row per request, concurrency sweep, bounded duration per point. The load generator is the
package's (controlplane/triton/load.py), async and single-process; its CPU share is reported with every point.

Usage: .venv/bin/python scripts/bench/serving.py [--seconds 4] [--concurrency 1,4,16,64] [--out bench-out]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from controlplane.readiness import free_port
from controlplane.triton.load import run_threads

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # scripts/: local_servers.py
from common import load_arguments, measured, summary_row, write_json  # noqa: E402
from local_servers import start_listening, stop, triton_options  # noqa: E402


def build(kind: str):
    import torch

    torch.manual_seed(0)
    if kind == "demo":
        from controlplane.demo.digits import build_classifier

        return build_classifier(), 64
    layers = [torch.nn.Linear(256, 1024), torch.nn.ReLU()]
    for _ in range(3):
        layers += [torch.nn.Linear(1024, 1024), torch.nn.ReLU()]
    layers += [torch.nn.Linear(1024, 10)]
    return torch.nn.Sequential(*layers).eval(), 256


def in_process(path: str, width: int, concurrency: int, seconds: float, batch: int) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {"x": np.random.default_rng(0).random((batch, width), dtype=np.float32)}

    def call() -> str:
        session.run(None, feed)
        return ""

    return summary_row(run_threads(lambda _: call, concurrency, seconds), rows_per_request=batch)  # the load is the computation


def triton_path(url: str, protocol: str, model: str, width: int, concurrency: int, seconds: float, input_name: str = "x") -> dict:
    async def run():
        if protocol == "grpc":
            import tritonclient.grpc.aio as client_mod
        else:
            import tritonclient.http.aio as client_mod
        client = client_mod.InferenceServerClient(url)
        x = np.random.default_rng(0).random((1, width), dtype=np.float32)
        tensor = client_mod.InferInput(input_name, [1, width], "FP32")
        tensor.set_data_from_numpy(x)

        async def call() -> str:
            await client.infer(model, [tensor])
            return ""

        try:
            await call()
            return await measured(lambda _: call, concurrency, seconds)
        finally:
            await client.close()

    return asyncio.run(run())


def json_path(url: str, body: dict, concurrency: int, seconds: float, headers: dict | None = None) -> dict:
    """Closed-loop JSON POSTs to `url` (aiohttp, one connection pool)."""
    import aiohttp

    async def run():
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, headers=headers or {}) as session:
            async def call() -> str:
                async with session.post(url, json=body) as response:
                    response.raise_for_status()
                    await response.read()
                return ""

            await call()
            return await measured(lambda _: call, concurrency, seconds)

    return asyncio.run(run())


def naive_path(url: str, width: int, concurrency: int, seconds: float) -> dict:
    body = {"inputs": np.random.default_rng(0).random((1, width)).round(4).tolist()}
    return json_path(f"http://{url}/predict", body, concurrency, seconds)


def main() -> int:
    from controlplane.export.exporter import ExportRequest, export_model
    from controlplane.model.config import ServingOptions, VersionPolicy
    from controlplane.model.signature import TensorSpec
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.server.local import LocalServers

    parser = load_arguments()
    parser.add_argument("--models", default="demo,large")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlctl-bench-"))
    (work / "repo").mkdir()
    repo = Repository(open_store(str(work / "repo")))
    widths, onnx_files = {}, {}
    for kind in args.models.split(","):
        module, width = build(kind)
        bundle = export_model(ExportRequest(f"bench {kind}", (TensorSpec("x", "float32", (width,)),), work / kind, ("y",),
                                            formats=("onnx",), max_batch_size=64), model=module)
        for suffix, dynamic in (("dyn", True), ("nodyn", False)):
            repo.publish(bundle, f"{kind}_{suffix}", "onnx",
                         ServingOptions(dynamic_batching=dynamic, max_queue_delay_us=1000, version_policy=VersionPolicy("latest", (1,))))
        widths[kind], onnx_files[kind] = width, str(bundle.path / "model.onnx")

    servers = LocalServers(work / "home")
    state = servers.start(triton_options(repo.uri, "bench"))
    naive = {}
    results = []
    try:
        for kind in widths:
            port = free_port()
            proc = start_listening([sys.executable, str(HERE / "naive_server.py"), onnx_files[kind], str(port)], port,
                                   f"naive server ({kind} model)")
            naive[kind] = (proc, f"127.0.0.1:{port}")
        for kind, width in widths.items():
            for c in args.concurrency:
                paths = {
                    "in-process ORT, 1 row/call": lambda: in_process(onnx_files[kind], width, c, args.seconds, 1),
                    "in-process ORT, 64 rows/call": lambda: in_process(onnx_files[kind], width, c, args.seconds, 64),
                    "Triton gRPC, dynamic batching": lambda: triton_path(state.grpc_url, "grpc", f"{kind}_dyn", width, c, args.seconds),
                    "Triton gRPC, no batching": lambda: triton_path(state.grpc_url, "grpc", f"{kind}_nodyn", width, c, args.seconds),
                    "Triton HTTP, dynamic batching": lambda: triton_path(state.http_url, "http", f"{kind}_dyn", width, c, args.seconds),
                    "naive FastAPI + ORT": lambda: naive_path(naive[kind][1], width, c, args.seconds),
                }
                for path, run in paths.items():
                    row = {"model": kind, "path": path, "concurrency": c, **run()}
                    results.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        for proc, _ in naive.values():
            stop(proc)
        servers.stop("bench", grace_s=10)
    write_json(args.out, "serving.json", results)
    write_markdown(results, args.out / "serving.md")
    plot(results, args.out)
    return 0


def write_markdown(results: list[dict], path: Path) -> None:
    lines = ["| model | path | conc. | rows/s | req/s | p50 ms | p95 ms | p99 ms | failures | loadgen CPU |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        share = "-" if r["loadgen_cpu_share"] is None else f"{r['loadgen_cpu_share']:.0%}"
        p50, p95, p99 = ("-" if r[k] is None else f"{r[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms"))
        lines.append(f"| {r['model']} | {r['path']} | {r['concurrency']} | {r['rows_per_s']:.0f} | {r['requests_per_s']:.0f} | "
                     f"{p50} | {p95} | {p99} | {r['failures']} | {share} |")
    path.write_text("\n".join(lines) + "\n")


def plot(results: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for kind in sorted({r["model"] for r in results}):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for path in dict.fromkeys(r["path"] for r in results):
            rows = [r for r in results if r["model"] == kind and r["path"] == path]
            ax.plot([r["concurrency"] for r in rows], [r["rows_per_s"] for r in rows], marker="o", label=path)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrency (closed loop, 1 row per request)")
        ax.set_ylabel("rows/s")
        ax.set_title(f"{kind} model")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"serving-{kind}.png", dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
