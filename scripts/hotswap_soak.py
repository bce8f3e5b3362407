"""Memory over many switches, and a neighbour's latency while they happen.

Two local replicas of one channel serve `digits` (switched: promote, rollback, N cycles) and `neighbour` (never
switched, under steady load on the same replicas). Samples the RSS of each tritonserver and its backend stubs
(its process group) at the baseline, after every cycle and at the end (after a last settle), and the neighbour's
p99 in a window before the switches and during them. GPU memory comes from Triton's metrics where they exist.

Usage: .venv/bin/python scripts/hotswap_soak.py [--cycles 100] [--clients 4] [--max-seconds 900] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from local_servers import channel_replicas, demo_load, scratch_repository

from controlplane.demo import digits as demo
from controlplane.processes import group_members, rss_bytes
from controlplane.readiness import wait_until
from controlplane.release.lifecycle import Lifecycle
from controlplane.triton.server.process import stub_pids
from controlplane.triton.targets import Targets

BEFORE_WINDOW_S = 8.0  # the neighbour's p99 before any switch: a measurement window, not a readiness wait


def group_rss(states, stubs_only: bool = False) -> int:
    """RSS of each server and its stubs (its process group), or of its stubs only."""
    return sum(rss_bytes(pid) for s in states for pid in (stub_pids(s.pid) if stubs_only else group_members(s.pid)))


def children(pid: int) -> set[int]:
    """Direct children of `pid` (the stubs a server launches), from /proc/<pid>/task/*/children."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.update(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def renice(pid: int, nice: int) -> None:
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
        except (ProcessLookupError, PermissionError):
            continue


@contextmanager
def niced_new_stubs(states, nice: int):
    """An experiment: the stubs that start while the block runs (a loading version's) run at `nice`; back to 0 at
    its end (that step needs root or CAP_SYS_NICE, so the experiment says nothing of unprivileged servers)."""
    if not nice:
        yield
        return
    before = {c for s in states for c in children(s.pid)}
    niced: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.005):
            for pid in {c for s in states for c in children(s.pid)} - before - niced:
                renice(pid, nice)
                niced.add(pid)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        for pid in niced:
            renice(pid, 0)


def gpu_memory_bytes(metrics_url: str) -> float | None:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        lines = [l for l in response.read().decode().splitlines() if l.startswith("nv_gpu_memory_used_bytes")]
    return sum(float(l.rsplit(" ", 1)[1]) for l in lines) if lines else None


def p99_ms(records, start: float, end: float, windows=None, inside: bool = True) -> float | None:
    """p99 of the successful requests started in [start, end); with `windows`, only those inside (or outside) them."""
    def kept(r) -> bool:
        return windows is None or any(a <= r.start < b for a, b in windows) == inside

    latencies = [r.latency_s for r in records if start <= r.start < end and not r.error and kept(r)]
    return round(float(np.percentile(latencies, 99)) * 1000, 2) if latencies else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4, help="neighbour clients (steady load)")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--gap-s", type=float, default=0.0, help="a quiet pause after each switch: the neighbour's "
                        "p99 in the pauses is a baseline interleaved with the switches (robust to a drifting machine)")
    parser.add_argument("--nice-loading-stubs", type=int, default=0, help="experiment (root only): run the stubs of "
                        "a loading version at this nice value until its switch ends")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to tritonserver (repeatable), "
                        "e.g. --server-arg=--model-load-thread-count=1")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work, repo = scratch_repository("mlctl-soak-")
    v1, v2 = demo.publish_demo_versions(repo, "digits", (0, 1), work / "exports")
    demo.publish_demo_versions(repo, "neighbour", (2,), work / "exports-n")
    with channel_replicas(work / "home", repo.uri, 2, server_args=tuple(args.server_arg)) as states:
        targets = Targets({"production": tuple(s.grpc_url for s in states)})
        lifecycle = Lifecycle(repo, targets)
        lifecycle.promote("digits", v1, "production", "baseline", create_channel=True)
        lifecycle.promote("neighbour", 1, "production", "baseline", create_channel=True)
        load = demo_load("neighbour", states, args.clients, args.max_seconds, protocols=("grpc",))
        rss = lambda: group_rss(states)
        gpu = lambda: gpu_memory_bytes(states[0].metrics_url)
        before_start = time.monotonic()
        time.sleep(BEFORE_WINDOW_S)
        baseline, gpu_baseline = rss(), gpu()
        stubs_at_baseline = [len(stub_pids(s.pid)) for s in states]
        stubs_baseline = group_rss(states, stubs_only=True)
        samples, switch_s, windows = [baseline], [], []
        switches_start = time.monotonic()
        deadline = switches_start + args.max_seconds
        cycles = 0
        while cycles < args.cycles and time.monotonic() < deadline:
            for version in (v2, v1):
                t0 = time.monotonic()
                with niced_new_stubs(states, args.nice_loading_stubs):
                    lifecycle.promote("digits", version, "production", "soak")
                switch_s.append(time.monotonic() - t0)
                windows.append((t0, time.monotonic()))
                time.sleep(args.gap_s)
            cycles += 1
            samples.append(rss())
        switches_end = time.monotonic()
        records = load.stop()
        # Triton unloads the old version after the load returns, once its requests drain: the end is measured when
        # each replica is back to one stub per loaded model (as at the baseline), or after 60 s
        settled = True
        try:
            wait_until(lambda: [len(stub_pids(s.pid)) for s in states] == stubs_at_baseline, 60, "old versions' stubs gone")
        except TimeoutError:
            settled = False
        end = rss()
        stubs_end = group_rss(states, stubs_only=True)
        result = {
            "cycles": cycles, "switches": len(switch_s), "replicas": 2, "neighbour_clients": args.clients,
            "switch_s_median": round(float(np.median(switch_s)), 3) if switch_s else None,
            "switch_s_max": round(max(switch_s), 3) if switch_s else None,
            "rss_baseline_mb": round(baseline / 2**20, 1), "rss_peak_mb": round(max(samples + [end]) / 2**20, 1),
            "rss_end_mb": round(end / 2**20, 1), "rss_end_vs_baseline": round(end / baseline - 1, 4),
            "stubs_settled_at_end": settled, "stubs_rss_baseline_mb": round(stubs_baseline / 2**20, 1), "stubs_rss_end_mb": round(stubs_end / 2**20, 1),
            "rss_after_each_cycle_mb": [round(s / 2**20, 1) for s in samples],
            "gpu_memory_baseline": gpu_baseline, "gpu_memory_end": gpu(),
            "neighbour_requests": len(records), "neighbour_failures": sum(1 for r in records if r.error),
            "neighbour_p99_before_ms": p99_ms(records, before_start, switches_start),
            "neighbour_p99_during_ms": p99_ms(records, switches_start, switches_end),
        }
        before, during = result["neighbour_p99_before_ms"], result["neighbour_p99_during_ms"]
        result["neighbour_p99_ratio"] = round(during / before, 3) if before and during else None
        if args.gap_s:
            switching = p99_ms(records, switches_start, switches_end, windows, inside=True)
            quiet = p99_ms(records, switches_start, switches_end, windows, inside=False)
            result.update(neighbour_p99_switching_ms=switching, neighbour_p99_pauses_ms=quiet,
                          neighbour_p99_ratio_interleaved=round(switching / quiet, 3) if switching and quiet else None)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    return 0 if result["neighbour_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
