"""mlctl tune on the GPU benchmark's model: the fp16 TorchScript MLP of gpu_bench.py is published into a local
repository through the package's publish path, then `controlplane.perf.tune.run.tune` searches instance count,
max batch size, batching delay and preferred batch sizes (KIND_GPU instances) under a p99 budget on a scratch
Triton, its coordinate descent starting at the hand-picked config of the last GPU run (3 instances, max batch
1024, 200 us) so that config is measured the same way, on the same server, as everything the search tries.
In-process torch on the same GPU is the ceiling. Run through `scripts/bench/gpu.sh --tune` on a lent GPU machine.

Writes OUT/gpu_tune.json (the whole tune result, the ceiling and the summary), OUT/progress.log (one line per
config as it is measured, kept when the run is cut short) and OUT/server.log; prints the summary last.

Batching off is not searched by default: with 128 rows per request each execution would carry one request, and
the hand-off between Triton and the Python backend per execution is what limits this model (docs/benchmarks.md),
so on a short device lease its branch only spends time (`--batching on,off` adds it).

Usage: python scripts/bench/gpu_tune.py --out DIR [--device cuda|cpu] [--max-seconds 300] [--max-configs 12]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the same model and ceiling as the GPU benchmark
from gpu_bench import build_model, in_process

T0 = time.monotonic()


def elapsed() -> float:
    return time.monotonic() - T0


def interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def words(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--width", type=int, default=1024, help="input features")
    parser.add_argument("--hidden", type=int, default=16384)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--rows", type=int, default=128, help="rows per request")
    parser.add_argument("--model-max-batch", type=int, default=1024, help="the published model's max batch size")
    parser.add_argument("--hand", default="3,1024,200", help="hand-picked config: instances,max batch,delay us")
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", default="16,32,64", help="closed-loop clients per config")
    parser.add_argument("--instances", default="2,3,4,5")
    parser.add_argument("--max-batch", default="512,1024")
    parser.add_argument("--delays-us", default="0,200,1000")
    parser.add_argument("--preferred", default="none,halves")
    parser.add_argument("--batching", default="on", help="on, off or on,off")
    parser.add_argument("--kinds", default="", help="instance kinds searched [default: gpu on cuda, cpu on cpu]")
    parser.add_argument("--window-s", type=float, default=0.5, help="measurement window")
    parser.add_argument("--max-windows", type=int, default=5, help="windows per point before it is called unstable")
    parser.add_argument("--ceiling-seconds", type=float, default=3.0)
    parser.add_argument("--max-seconds", type=float, default=300.0,
                        help="the whole script's time: no new config is tried after this less --reserve-s")
    parser.add_argument("--reserve-s", type=float, default=40.0, help="time kept for the last config and the stop")
    parser.add_argument("--max-configs", type=int, default=12)
    return parser.parse_args()


def export_and_publish(model, args, work: Path, dtype, dtype_name: str, hand):
    """TorchScript through the export bundle and Repository.publish, served as the hand-picked config."""
    import torch

    from controlplane.model.bundle import ExportBundle
    from controlplane.model.config import ServingOptions
    from controlplane.model.provenance import utc_now
    from controlplane.model.signature import Signature, TensorSpec
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    export = work / "export"
    export.mkdir(parents=True)
    example = torch.randn(2, args.width, device=args.device, dtype=dtype)
    with torch.no_grad():
        torch.jit.trace(model, example).save(str(export / "model.pt"))
    signature = Signature((TensorSpec("x", dtype_name, (args.width,)),), (TensorSpec("y", dtype_name, (1000,)),), args.model_max_batch)
    bundle = ExportBundle(export, signature, ("torchscript",), {}, "scripts/bench/gpu_tune.py", utc_now(), {"torch": torch.__version__})
    (work / "repo").mkdir()
    repo = Repository(open_store(str(work / "repo")))
    manifest = repo.publish(bundle, "big", "torchscript", ServingOptions(
        max_queue_delay_us=hand.delay_us, instance_count=hand.instances, instance_kind=hand.instance_kind))
    return repo, manifest.version


def summary_of(result, hand, ceiling: float, setup_s: float) -> dict:
    budget = result.budget
    by_config = {e.candidate: e for e in result.evaluations}
    hand_eval = by_config.get(hand)
    hand_point = hand_eval.best_point(budget) if hand_eval else None
    best_point = result.best_point()
    tuned = best_point.rows_per_s if best_point else None
    hand_rows = hand_point.rows_per_s if hand_point else None

    def share(v):
        return None if v is None or not ceiling else round(v / ceiling, 3)

    return {
        "p99_budget_ms": budget.p99_ms,
        "tuned_rows_per_s": tuned,
        "tuned_config": result.best.candidate.label() if result.best else None,
        "tuned_point": None if best_point is None else {"concurrency": best_point.level, "p99_ms": best_point.p99_ms},
        "hand_rows_per_s": hand_rows,
        "hand_config": hand.label(),
        "hand_point": None if hand_point is None else {"concurrency": hand_point.level, "p99_ms": hand_point.p99_ms},
        "ceiling_rows_per_s": ceiling,
        "tuned_over_ceiling": share(tuned),
        "hand_over_ceiling": share(hand_rows),
        "gain_over_hand": None if not tuned or not hand_rows else round(tuned / hand_rows - 1, 3),
        "tune_wall_s": round(result.wall_s, 1),
        "configs_measured": len(result.evaluations),
        "load_points": sum(len(e.points) for e in result.evaluations),
        "stopped_at_limit": result.stopped_at_limit,
        "setup_s": round(setup_s, 1),
        "script_wall_s": round(elapsed(), 1),
    }


def main() -> int:
    import numpy as np
    import torch

    from controlplane.perf.tune.run import TunePlan, tune
    from controlplane.perf.tune.search import Budget
    from controlplane.perf.tune.space import Candidate, Space
    from controlplane.perf.windows import WindowPolicy

    args = parse_args()
    signal.signal(signal.SIGTERM, interrupted)  # a `timeout` stops the scratch server and keeps its log too
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = args.device == "cuda"
    dtype, dtype_name = (torch.float16, "float16") if gpu else (torch.float32, "float32")
    kinds = words(args.kinds) or (("gpu",) if gpu else ("cpu",))
    instances, delay = ints(args.hand)[0], ints(args.hand)[2]
    hand = Candidate(instances, True, ints(args.hand)[1], delay, "none", kinds[0])
    info = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__, "numpy": np.__version__,
            "width": args.width, "hidden": args.hidden, "depth": args.depth, "dtype": dtype_name, "rows_per_request": args.rows,
            "hand": hand.to_dict(), "p99_ms": args.p99_ms}
    print(json.dumps(info), flush=True)
    progress_log = (out / "progress.log").open("a")

    def say(message: str) -> None:
        line = f"[{elapsed():6.1f} s] {message}"
        print(line, file=sys.stderr, flush=True)
        progress_log.write(line + "\n")
        progress_log.flush()

    with torch.device(args.device):  # initialised where it runs: a CPU init of 1.1 G parameters costs seconds
        model = build_model(args.width, args.hidden, args.depth, 1000).to(dtype=dtype)
    ceiling_rows = []
    for batch in sorted({args.rows, args.model_max_batch}):
        ceiling_rows.append(in_process(model, args.device, args.width, batch, args.ceiling_seconds, dtype))
        say(json.dumps(ceiling_rows[-1]))
    ceiling = max(r["rows_per_s"] for r in ceiling_rows)

    work = Path(tempfile.mkdtemp(prefix="mlctl-gpu-tune-"))
    repo, version = export_and_publish(model, args, work, dtype, dtype_name, hand)
    del model
    if gpu:
        torch.cuda.empty_cache()
    setup_s = elapsed()
    say(f"published big v{version} in {repo.uri} (hand-picked settings); setup {setup_s:.0f} s")

    space = Space(instances=ints(args.instances), batching=tuple(b == "on" for b in words(args.batching)),
                  max_batch_size=ints(args.max_batch), delay_us=ints(args.delays_us), preferred=words(args.preferred),
                  instance_kind=kinds)
    plan = TunePlan(Budget(args.p99_ms), space, ints(args.concurrency),
                    WindowPolicy(seconds=args.window_s, max_windows=args.max_windows), "coordinate", args.rows,
                    start=hand, max_seconds=max(0.0, args.max_seconds - args.reserve_s - elapsed()), max_configs=args.max_configs)
    home = work / "home"
    try:
        result = tune(repo, "big", version, plan, home, progress=say)
    finally:
        logs = sorted(home.rglob("*.log"))
        if logs:
            (out / "server.log").write_text(logs[-1].read_text(errors="replace")[-200_000:])
        shutil.rmtree(work, ignore_errors=True)  # the model twice over (export and repository): GBs on the GPU run
    summary = summary_of(result, hand, ceiling, setup_s)
    (out / "gpu_tune.json").write_text(json.dumps({"info": info, "ceiling": ceiling_rows, "summary": summary,
                                                   "tune": result.to_dict()}, indent=2))
    for e in result.evaluations:
        p = e.best_point(result.budget)
        print(f"{e.candidate.label():48s} " + (f"{p.rows_per_s:>10,.0f} rows/s at {p.level:g} clients, p99 {p.p99_ms} ms"
                                                if p else "no point under the budget"), flush=True)
    print(json.dumps(summary), flush=True)
    return 0 if result.best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
