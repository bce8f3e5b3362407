"""mlctl tune's search (halving by default; --searches picks others) against the exhaustive grid of the same
space, in one run, on the demo model and the larger MLP of the serving benchmark: the best throughput under the p99
budget each finds, and the wall time of each (goal: within 10% of the grid's best in at most a quarter of its time).
Each row also holds the host's load average (1 min) before and after the search: the host may be shared.

Each model is published with mlctl's defaults into a scratch repository; each search runs on its own scratch
Triton (started from the wheel, as `mlctl tune` does), with the same space, load levels and windows.

Usage: .venv/bin/python scripts/tune_vs_grid.py [--models demo,large] [--budgets demo=25,large=60] [--window-s 0.25]
       [--searches halving,grid] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "bench"))
from serving import build


def publish(kind: str, work: Path):
    from controlplane.export.exporter import ExportRequest, export_model
    from controlplane.model.config import ServingOptions
    from controlplane.model.signature import TensorSpec
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    (work / "repo").mkdir(exist_ok=True)
    repo = Repository(open_store(str(work / "repo")))
    module, width = build(kind)
    bundle = export_model(ExportRequest(f"bench {kind}", (TensorSpec("x", "float32", (width,)),), work / kind, ("y",),
                                        formats=("onnx",), max_batch_size=64), model=module)
    return repo, repo.publish(bundle, kind, "onnx", ServingOptions()).version


def main() -> int:
    from controlplane.perf.tune.run import TunePlan, tune
    from controlplane.perf.tune.search import Budget
    from controlplane.perf.tune.space import Space
    from controlplane.perf.windows import WindowPolicy

    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="demo,large")
    parser.add_argument("--budgets", default="demo=25,large=60", 
                        help="p99 budget in ms per model (a 2-core host shared with other work has p99 spikes of 10-50 ms)")
    parser.add_argument("--window-s", type=float, default=0.25)
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--searches", default="halving,grid", help="searches to run, in order; the last is the reference")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    budgets = {k: float(v) for k, v in (item.split("=") for item in args.budgets.split(","))}
    levels = tuple(int(v) for v in args.levels.split(","))
    space = Space(instances=(1, 2), max_batch_size=(8, 32), delay_us=(0, 500, 2000), preferred=("none", "halves"))
    work = Path(tempfile.mkdtemp(prefix="mlctl-tune-bench-"))
    searches = args.searches.split(",")
    rows = []
    for kind in args.models.split(","):
        repo, version = publish(kind, work)
        for search in searches:
            load_before = os.getloadavg()[0]
            plan = TunePlan(Budget(budgets[kind]), space, levels, WindowPolicy(seconds=args.window_s, max_windows=6), search)
            started = time.monotonic()
            result = tune(repo, kind, version, plan, work / "home", progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
            point = result.best_point()
            row = {"model": kind, "search": search, "p99_budget_ms": budgets[kind], "wall_s": round(time.monotonic() - started, 1),
                   "configs": result.configs_tried, "measurements": len(result.evaluations),
                   "load_points": sum(len(e.points) for e in result.evaluations),
                   "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                   "best_req_per_s": None if point is None else point.requests_per_s,
                   "best_p99_ms": None if point is None else point.p99_ms,
                   "best_config": None if result.best is None else result.best.candidate.label()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for kind in args.models.split(","):
        grid = next(r for r in rows if r["model"] == kind and r["search"] == searches[-1])
        for row in (r for r in rows if r["model"] == kind and r is not grid):
            if row["best_req_per_s"] and grid["best_req_per_s"]:
                print(json.dumps({"model": kind, "search": row["search"], "reference": grid["search"],
                                  "share_of_reference_best": round(row["best_req_per_s"] / grid["best_req_per_s"], 3),
                                  "share_of_reference_time": round(row["wall_s"] / grid["wall_s"], 3)}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_vs_grid.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
