"""GPU serving benchmark: a compute-bound TorchScript MLP on a local Triton with KIND_GPU instances, against
in-process torch on the same GPU (the ceiling), at several gRPC concurrencies; GPU utilisation and memory
read from Triton's own metrics during each load. Run through scripts/bench/gpu.sh on a lent GPU machine.

Usage: python scripts/bench/gpu_bench.py --out DIR [--device cuda|cpu] [--seconds 10] [--concurrency 4,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

# Only the package and its dependencies: this runs standalone on a lent GPU machine (see gpu.sh).
from controlplane.readiness import free_port
from controlplane.triton.load import run_async, run_threads

SYNC_EVERY = 20  # calls between CUDA synchronisations: kernels queue ahead, but not far past the deadline


def build_model(width: int, hidden: int, depth: int, classes: int):
    """Narrow input, wide hidden layers: compute dominates, and the bytes each request carries stay small."""
    import torch

    torch.manual_seed(0)
    layers: list = [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
    for _ in range(depth - 1):
        layers += [torch.nn.Linear(hidden, hidden), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(hidden, classes)).eval()


def in_process(model, device: str, width: int, batch: int, seconds: float, dtype) -> dict:
    import torch

    module = model.to(device=device, dtype=dtype)
    x = torch.randn(batch, width, device=device, dtype=dtype)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    calls = 0

    @torch.inference_mode()  # per call: inference mode is per thread, and the load runs in its own
    def call() -> str:
        nonlocal calls
        module(x)
        calls += 1
        if calls % SYNC_EVERY == 0:
            synchronize()
        return ""

    for _ in range(10):
        call()
    synchronize()
    calls = 0
    result = run_threads(lambda _: call, 1, seconds)
    finish = time.monotonic()
    synchronize()  # the work still queued counts in the time
    elapsed = result.elapsed_s + time.monotonic() - finish
    if result.failures:
        raise RuntimeError(f"in-process torch, batch {batch}: {result.records[-1].error}")
    return {"path": f"in-process torch, batch {batch}", "rows_per_s": round(len(result.records) * batch / elapsed, 1),
            "calls": len(result.records)}


def gpu_metrics(url: str) -> dict:
    from controlplane.observe.metrics import direct

    figures = direct.server_figures(direct.scrape(url))
    return {k: figures[k] for k in ("gpu_utilization", "gpu_memory_used_bytes", "gpu_memory_total_bytes", "gpu_power_watts")}


def triton_load(url: str, metrics_url: str, model: str, width: int, rows: int, concurrency: int, seconds: float, np_dtype, wire: str) -> dict:
    import tritonclient.grpc.aio as grpcclient

    samples: list[dict] = []
    stop = threading.Event()

    def sampler():
        while not stop.wait(1.0):
            try:
                samples.append(gpu_metrics(metrics_url))
            except Exception as exc:  # a missed scrape is reported, not fatal
                samples.append({"error": str(exc)})

    async def run():
        client = grpcclient.InferenceServerClient(url)
        x = np.random.default_rng(0).standard_normal((rows, width)).astype(np_dtype)
        tensor = grpcclient.InferInput("x", [rows, width], wire)
        tensor.set_data_from_numpy(x)

        async def call() -> str:
            await client.infer(model, [tensor])
            return ""

        try:
            await call()
            return await run_async(lambda _: call, concurrency, seconds)
        finally:
            await client.close()

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        result = asyncio.run(run())
    finally:
        stop.set()
        thread.join()
    good = [s for s in samples if "error" not in s and s.get("gpu_utilization") is not None]
    return {
        "path": "Triton gRPC (KIND_GPU, dynamic batching)",
        "concurrency": concurrency,
        "rows_per_request": rows,
        "rows_per_s": round(result.requests_per_s * rows, 1),
        "requests_per_s": round(result.requests_per_s, 1),
        **{f"p{q}_ms": None if (ms := result.percentile_ms(q)) is None else round(ms, 2) for q in (50, 99)},
        "failures": result.failures,
        "gpu_utilization_mean": round(float(np.mean([s["gpu_utilization"] for s in good])), 3) if good else None,
        "gpu_memory_used_bytes_max": max((s["gpu_memory_used_bytes"] or 0 for s in good), default=None),
        "gpu_memory_total_bytes": good[-1]["gpu_memory_total_bytes"] if good else None,
        "metric_samples": len(good),
    }


def main() -> int:
    import torch

    from controlplane.model import config as model_config
    from controlplane.model.config import ServingOptions, VersionPolicy
    from controlplane.model.signature import Signature, TensorSpec
    from controlplane.triton.server.local import LocalServers, ServerOptions

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="8,32,64")
    parser.add_argument("--width", type=int, default=1024, help="input features")
    parser.add_argument("--hidden", type=int, default=16384)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64, help="rows per request")
    parser.add_argument("--max-batch", type=int, default=512)
    parser.add_argument("--instances", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = args.device == "cuda"
    dtype, np_dtype, wire, dtype_name = (torch.float16, np.float16, "FP16", "float16") if gpu else (torch.float32, np.float32, "FP32", "float32")
    info = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__, "numpy": np.__version__,
            "width": args.width, "hidden": args.hidden, "depth": args.depth, "dtype": dtype_name,
            "rows_per_request": args.rows, "max_batch": args.max_batch, "instances": args.instances}
    print(json.dumps(info), flush=True)

    model = build_model(args.width, args.hidden, args.depth, 1000)
    results = {"info": info, "ceiling": [], "triton": []}
    for batch in sorted({args.rows, 256, args.max_batch}):
        results["ceiling"].append(in_process(model, args.device, args.width, batch, min(args.seconds, 5), dtype))
        print(json.dumps(results["ceiling"][-1]), flush=True)

    work = Path(tempfile.mkdtemp(prefix="mlctl-gpu-"))
    version_dir = work / "repo" / "big" / "1"
    version_dir.mkdir(parents=True)
    example = torch.randn(2, args.width, device=args.device, dtype=dtype)
    torch.jit.trace(model.to(device=args.device, dtype=dtype), example).save(str(version_dir / "model.pt"))
    signature = Signature((TensorSpec("x", dtype_name, (args.width,)),), (TensorSpec("y", dtype_name, (1000,)),), args.max_batch)
    config = model_config.build_config("big", "torchscript", signature, ServingOptions(
        max_queue_delay_us=200, instance_count=args.instances, instance_kind="gpu" if gpu else "cpu",
        version_policy=VersionPolicy("latest", (1,))))
    (work / "repo" / "big" / "config.pbtxt").write_text(model_config.to_pbtxt(config))
    del model
    if gpu:
        torch.cuda.empty_cache()

    servers = LocalServers(work / "home")
    t0 = time.monotonic()
    state = servers.start(ServerOptions(repository=str(work / "repo"), name="gpu", http_port=free_port(),
                                        grpc_port=free_port(), metrics_port=free_port(), timeout_s=240))
    results["server_start_to_ready_s"] = round(time.monotonic() - t0, 2)
    try:
        results["idle_gpu_metrics"] = gpu_metrics(state.metrics_url)
        for c in [int(v) for v in args.concurrency.split(",")]:
            row = triton_load(state.grpc_url, state.metrics_url, "big", args.width, args.rows, c, args.seconds, np_dtype, wire)
            results["triton"].append(row)
            print(json.dumps(row), flush=True)
    finally:
        servers.stop("gpu", grace_s=20)
        (out / "server.log").write_text(Path(state.log_path).read_text()[-200_000:])
    best_triton = max(r["rows_per_s"] for r in results["triton"])
    ceiling = max(r["rows_per_s"] for r in results["ceiling"])
    results["triton_best_over_ceiling"] = round(best_triton / ceiling, 3)
    (out / "gpu.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({"triton_best_rows_per_s": best_triton, "ceiling_rows_per_s": ceiling,
                      "ratio": results["triton_best_over_ceiling"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
