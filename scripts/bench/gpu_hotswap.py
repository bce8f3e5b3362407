"""Issue 16's soak and overload drills on a lent GPU machine, within one time budget: scripts/hotswap_soak.py
(2 replicas, a TorchScript model with KIND_GPU instances switched promote/rollback under load while a neighbour
model takes steady load; RSS of servers and stubs, and GPU memory from Triton's metrics) and then
scripts/overload.py (the same model at twice its saturation rate, with a queue policy).
Run through `scripts/bench/gpu.sh --hotswap` there; on a CPU machine `--instance-kind cpu` runs the same steps.

Each drill runs as its own process with a hard time limit taken from what is left of `--max-seconds` (SIGTERM, then
SIGKILL 30 s later); each writes its JSON as it goes, so a drill cut short still leaves what it measured.
Writes OUT/soak.json, OUT/soak.server.log, OUT/overload.json, OUT/overload.server.log, OUT/hotswap.log (both drills'
output) and OUT/hotswap.json (the summary), and prints the summary as one JSON line last.

Usage: python scripts/bench/gpu_hotswap.py --out DIR [--instance-kind gpu] [--max-seconds 300] [--soak-seconds 150]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent
T0 = time.monotonic()
KILL_AFTER_S = 30.0  # after SIGTERM: the drill stops its servers (grace 10-15 s each) and writes what it has
STOP_S = 25.0  # a soak's last cycle (two switches) and the stop of its two replicas


def elapsed() -> float:
    return time.monotonic() - T0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--format", default="torchscript", choices=("onnx", "torchscript"))
    parser.add_argument("--instance-kind", default="gpu", choices=("cpu", "gpu"))
    parser.add_argument("--max-seconds", type=float, default=300.0, help="both drills together, hard limits included")
    parser.add_argument("--soak-seconds", type=float, default=150.0, help="switching time of the soak (no new cycle after)")
    parser.add_argument("--cycles", type=int, default=100, help="most promote/rollback cycles")
    parser.add_argument("--clients", type=int, default=4, help="the neighbour's closed-loop clients")
    parser.add_argument("--before-s", type=float, default=8.0, help="the neighbour's window before the switches")
    parser.add_argument("--settle-s", type=float, default=30.0, help="longest wait for the old stubs to go at the end")
    parser.add_argument("--overload-seconds", type=float, default=20.0, help="the open loop at twice saturation")
    parser.add_argument("--overload-reserve-s", type=float, default=50.0,
                        help="time kept for the overload drill (publish, start, saturation, open loop, stop)")
    parser.add_argument("--max-queue-size", type=int, default=4)
    parser.add_argument("--budget-ms", type=float, default=50.0)
    return parser.parse_args()


def run_drill(name: str, command: list[str], limit_s: float, log) -> dict:
    """Run one drill with its output in the log; SIGTERM at `limit_s`, SIGKILL KILL_AFTER_S later."""
    log.write(f"=== {name} at {elapsed():.1f} s, limit {limit_s:.0f} s: {' '.join(command)}\n")
    log.flush()
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    stopped = ""
    try:
        rc = proc.wait(timeout=max(1.0, limit_s))
    except subprocess.TimeoutExpired:
        stopped = "SIGTERM at its time limit"
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=KILL_AFTER_S)
        except subprocess.TimeoutExpired:
            stopped = "SIGKILL after SIGTERM at its time limit"
            proc.kill()
            rc = proc.wait()
    except BaseException:  # this wrapper is stopped: its drill stops too, and keeps what it measured
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=KILL_AFTER_S)
        raise
    wall = round(time.monotonic() - started, 1)
    log.write(f"=== {name} ended: exit status {rc}, {wall} s{', ' + stopped if stopped else ''}\n")
    log.flush()
    return {"rc": rc, "wall_s": wall, "stopped": stopped or None}


def interrupted(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # once: a second signal (a process group's timeout) must not cut the cleanup
    raise KeyboardInterrupt(f"signal {signum}")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary_of(soak: dict | None, overload: dict | None, runs: dict) -> dict:
    soak, overload = soak or {}, overload or {}
    keys_soak = ("complete", "cycles", "switches", "switch_s_median", "switch_s_max", "rss_baseline_mb", "rss_peak_mb",
                 "rss_end_mb", "rss_end_vs_baseline", "stubs_settled_at_end", "gpu_memory_baseline_mb",
                 "gpu_memory_peak_mb", "gpu_memory_end_mb", "gpu_memory_end_vs_baseline", "neighbour_requests",
                 "neighbour_failures", "neighbour_p99_before_ms", "neighbour_p99_during_ms", "neighbour_p99_ratio")
    keys_overload = ("saturation_rps", "offered_rps", "sent_rps", "accepted", "accepted_p99_ms", "rejected",
                     "rejected_p50_ms", "rejected_p99_ms", "other_failures", "accepted_within_budget", "rejected_fast")
    summary = {"soak_" + k: soak.get(k) for k in keys_soak}
    summary.update({"overload_" + k: overload.get(k) for k in keys_overload})
    end = soak.get("rss_end_vs_baseline")
    summary["goal_memory_end_within_5pct"] = None if end is None else abs(end) <= 0.05
    gpu_end = soak.get("gpu_memory_end_vs_baseline")
    summary["goal_gpu_memory_end_within_5pct"] = None if gpu_end is None else abs(gpu_end) <= 0.05
    ratio = soak.get("neighbour_p99_ratio")
    summary["goal_neighbour_ratio_at_most_1_2"] = None if ratio is None else ratio <= 1.2
    summary["runs"] = runs
    summary["script_wall_s"] = round(elapsed(), 1)
    return summary


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, interrupted)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    runs: dict = {}
    soak_json, overload_json = out / "soak.json", out / "overload.json"
    try:
        with (out / "hotswap.log").open("a") as log:
            soak_limit = args.max_seconds - args.overload_reserve_s - elapsed()
            # no new cycle once only the settle and the stop of the replicas fit in the soak's limit
            last_cycle_at = soak_limit - args.settle_s - STOP_S
            runs["soak"] = run_drill("soak", [
                python, str(SCRIPTS / "hotswap_soak.py"), "--format", args.format, "--instance-kind", args.instance_kind,
                "--cycles", str(args.cycles), "--clients", str(args.clients), "--max-seconds", str(args.soak_seconds),
                "--deadline-s", str(round(last_cycle_at)), "--before-s", str(args.before_s), "--settle-s", str(args.settle_s),
                "--out", str(soak_json), "--json",
            ], soak_limit, log)
            overload_limit = args.max_seconds - elapsed()
            if overload_limit >= 20:
                runs["overload"] = run_drill("overload", [
                    python, str(SCRIPTS / "overload.py"), "--format", args.format, "--instance-kind", args.instance_kind,
                    "--seconds", str(args.overload_seconds), "--max-queue-size", str(args.max_queue_size),
                    "--budget-ms", str(args.budget_ms), "--out", str(overload_json), "--json",
                ], overload_limit, log)
            else:
                runs["overload"] = {"skipped": f"only {overload_limit:.0f} s left"}
    finally:
        summary = summary_of(read_json(soak_json), read_json(overload_json), runs)
        (out / "hotswap.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary), flush=True)
    return 0 if all(r.get("rc") == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
