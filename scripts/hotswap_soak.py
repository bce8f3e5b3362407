"""Memory over many switches, and a neighbour's latency while they happen.

Two local replicas of one channel serve `digits` (switched: promote, rollback, N cycles) and `neighbour` (never
switched, under steady load on the same replicas). Samples the RSS of each tritonserver and its backend stubs
(its process group) at the baseline, after every cycle and at the end (after a last settle), and the neighbour's
p99 in a window before the switches and during them. GPU memory comes from Triton's metrics where they exist
(`nv_gpu_memory_used_bytes`: the whole device, whichever replica reports it). A background sampler reads both
every `--sample-every-s` too, so the peak counts what a switch holds while it happens, not only between cycles.

`--format torchscript --instance-kind gpu` serves TorchScript on the GPU (the `pytorch` stand-in, no onnxruntime
needed): what scripts/bench/gpu.sh --hotswap runs on a lent GPU machine. `--out FILE` writes the result as JSON,
rewritten after every cycle (marked incomplete) so a run cut short keeps what it measured, and the replicas' log
tails beside it (FILE with .server.log); one progress line per cycle goes to stderr.

Usage: .venv/bin/python scripts/hotswap_soak.py [--cycles 100] [--clients 4] [--max-seconds 900] [--json]
       [--format onnx|torchscript] [--instance-kind cpu|gpu] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from local_servers import channel_replicas, demo_load, scratch_repository

from controlplane.demo import digits as demo
from controlplane.model.config import ServingOptions
from controlplane.processes import group_members, rss_bytes
from controlplane.readiness import wait_until
from controlplane.release.lifecycle import Lifecycle
from controlplane.triton.client import TritonClient
from controlplane.triton.load import run_open_loop
from controlplane.triton.server.process import stub_pids
from controlplane.triton.targets import Targets

OPEN_LOOP_SWITCH_INTERVAL_S = 0.0005
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


class Sampler:
    """RSS of the replicas (servers and stubs) and the GPU's memory every `every_s` in a background thread: the
    peak includes a switch in progress (two versions' stubs), which the samples between cycles miss."""

    def __init__(self, rss, gpu, every_s: float) -> None:
        self.rss, self.gpu, self.every_s = rss, gpu, every_s
        self.rss_peak, self.gpu_peak, self.count = 0, None, 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.rss_peak = max(self.rss_peak, self.rss())
            try:
                gpu = self.gpu()
            except OSError as exc:  # a scrape that fails is reported, not fatal to the soak
                self.errors.append(str(exc))
                continue
            if gpu is not None:
                self.gpu_peak = gpu if self.gpu_peak is None else max(self.gpu_peak, gpu)
            self.count += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def mb(value: float | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def write_json(path: Path, document: dict) -> None:
    """Temp file and rename: a reader (or a run cut short) never sees half a document."""
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps(document, indent=2))
    os.replace(temp, path)


def interrupted(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # once: a second signal (a process group's timeout) must not cut the cleanup
    raise KeyboardInterrupt(f"signal {signum}")


class OpenLoad:
    """The neighbour's requests at a fixed rate (open loop, round-robin over the replicas' gRPC endpoints, one
    client per worker thread), timed from each scheduled send; `stop()` returns the records."""

    def __init__(self, model: str, states, rate_per_s: float, max_seconds: float, workers: int = 16) -> None:
        self.model, self.rate, self.max_seconds = model, rate_per_s, max_seconds
        self.rows = {demo.INPUT_NAME: np.random.default_rng(0).random((1, 64), dtype=np.float32)}
        self.clients = [TritonClient(states[i % len(states)].grpc_url, "grpc", timeout_s=30) for i in range(workers)]
        self._stop, self._result = threading.Event(), []

    def start(self) -> OpenLoad:
        def caller(index: int):
            client = self.clients[index]
            return lambda: client.infer(self.model, self.rows).version

        def run() -> None:
            self._result.append(run_open_loop(caller, self.rate, self.max_seconds, max_in_flight=len(self.clients),
                                              stop=self._stop))

        # the workers time their requests: a thread whose answer came may wait up to the switch interval for the GIL
        sys.setswitchinterval(OPEN_LOOP_SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list:
        self._stop.set()
        self._thread.join(timeout=60)
        for client in self.clients:
            client.close()
        return list(self._result[0].records) if self._result else []


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
    parser.add_argument("--max-seconds", type=float, default=900, help="no new cycle starts after this many seconds "
                        "of switching")
    parser.add_argument("--neighbour-rate", type=float, default=0.0, help="the neighbour's load as an open loop at "
                        "this many requests/s over both replicas (a steady rate below capacity, as production runs) "
                        "instead of --clients closed-loop clients (which fill the cores, so any other work shows)")
    parser.add_argument("--gap-s", type=float, default=0.0, help="a quiet pause after each switch: the neighbour's "
                        "p99 in the pauses is a baseline interleaved with the switches (robust to a drifting machine)")
    parser.add_argument("--nice-loading-stubs", type=int, default=0, help="experiment (root only): run the stubs of "
                        "a loading version at this nice value until its switch ends")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to tritonserver (repeatable), "
                        "e.g. --server-arg=--model-load-thread-count=1")
    parser.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="the models' format")
    parser.add_argument("--instance-kind", default="cpu", choices=("cpu", "gpu"), help="KIND_CPU or KIND_GPU instances")
    parser.add_argument("--before-s", type=float, default=BEFORE_WINDOW_S, help="the neighbour's window before any switch")
    parser.add_argument("--settle-s", type=float, default=60.0, help="longest wait for the old versions' stubs to go")
    parser.add_argument("--sample-every-s", type=float, default=0.5, help="background RSS/GPU memory sampling period")
    parser.add_argument("--deadline-s", type=float, default=float("inf"), help="nor after this many seconds since "
                        "the script started (setup included), so that the settle and the stop fit a caller's limit")
    parser.add_argument("--out", help="write the result (JSON) here too, rewritten after every cycle")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)  # a `timeout` still stops the replicas and keeps the partial result
    out = Path(args.out) if args.out else None
    t_start = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f} s] {message}", file=sys.stderr, flush=True)

    result: dict = {"complete": False, "format": args.format, "instance_kind": args.instance_kind, "replicas": 2,
                    "neighbour_clients": None if args.neighbour_rate else args.clients,
                    "neighbour_rate_per_s": args.neighbour_rate or None}

    def save() -> None:
        if out:
            write_json(out, result)

    work, repo = scratch_repository("mlctl-soak-")
    options = ServingOptions(instance_kind=args.instance_kind)
    v1, v2 = demo.publish_demo_versions(repo, "digits", (0, 1), work / "exports", options, fmt=args.format)
    demo.publish_demo_versions(repo, "neighbour", (2,), work / "exports-n", options, fmt=args.format)
    say(f"published digits v{v1}, v{v2} and neighbour v1 ({args.format}, KIND_{args.instance_kind.upper()})")
    try:
        with channel_replicas(work / "home", repo.uri, 2, server_args=tuple(args.server_arg)) as states:
            targets = Targets({"production": tuple(s.grpc_url for s in states)})
            lifecycle = Lifecycle(repo, targets)
            lifecycle.promote("digits", v1, "production", "baseline", create_channel=True)
            lifecycle.promote("neighbour", 1, "production", "baseline", create_channel=True)
            result["setup_s"] = round(time.monotonic() - t_start, 1)
            say(f"2 replicas serve digits v{v1} and neighbour v1; neighbour load for {args.before_s:.0f} s before switching")
            # the load runs until stopped; its own limit only guards against a soak that never stops it
            load = (OpenLoad("neighbour", states, args.neighbour_rate, args.before_s + args.max_seconds + 600).start()
                    if args.neighbour_rate else
                    demo_load("neighbour", states, args.clients, args.before_s + args.max_seconds + 600, protocols=("grpc",)))
            rss = lambda: group_rss(states)
            gpu = lambda: gpu_memory_bytes(states[0].metrics_url)
            before_start = time.monotonic()
            time.sleep(args.before_s)
            baseline, gpu_baseline = rss(), gpu()
            sampler = Sampler(rss, gpu, args.sample_every_s).start()
            stubs_at_baseline = [len(stub_pids(s.pid)) for s in states]
            stubs_baseline = group_rss(states, stubs_only=True)
            samples, gpu_samples, switch_s, windows = [baseline], [gpu_baseline], [], []
            result.update(rss_baseline_mb=mb(baseline), gpu_memory_baseline_mb=mb(gpu_baseline),
                          stubs_at_baseline=stubs_at_baseline, stubs_rss_baseline_mb=mb(stubs_baseline))
            say(f"baseline: RSS {mb(baseline)} MB, GPU memory {mb(gpu_baseline)} MB, stubs {stubs_at_baseline}")
            switches_start = time.monotonic()
            deadline = min(switches_start + args.max_seconds, t_start + args.deadline_s)
            cycles = 0
            try:
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
                    gpu_samples.append(gpu())
                    result.update(cycles=cycles, switches=len(switch_s),
                                  switch_s_median=round(float(np.median(switch_s)), 3), switch_s_max=round(max(switch_s), 3),
                                  rss_after_each_cycle_mb=[mb(v) for v in samples],
                                  gpu_memory_after_each_cycle_mb=[mb(v) for v in gpu_samples],
                                  rss_peak_sampled_mb=mb(sampler.rss_peak), gpu_memory_peak_sampled_mb=mb(sampler.gpu_peak))
                    save()
                    say(f"cycle {cycles}: switches {switch_s[-2]:.2f} s, {switch_s[-1]:.2f} s; RSS {mb(samples[-1])} MB, "
                        f"GPU memory {mb(gpu_samples[-1])} MB")
            finally:
                switches_end = time.monotonic()
                records = load.stop()
                sampler.stop()
            # Triton unloads the old version after the load returns, once its requests drain: the end is measured when
            # each replica is back to one stub per loaded model (as at the baseline), or after --settle-s
            settled = True
            try:
                wait_until(lambda: [len(stub_pids(s.pid)) for s in states] == stubs_at_baseline, args.settle_s,
                           "old versions' stubs gone")
            except TimeoutError:
                settled = False
            end, gpu_end = rss(), gpu()
            stubs_end = group_rss(states, stubs_only=True)
            peak = max(samples + [end, sampler.rss_peak])
            gpu_values = [v for v in gpu_samples + [gpu_end, sampler.gpu_peak] if v is not None]
            result.update({
                "complete": True, "cycles": cycles, "switches": len(switch_s),
                "switch_s_median": round(float(np.median(switch_s)), 3) if switch_s else None,
                "switch_s_max": round(max(switch_s), 3) if switch_s else None,
                "rss_baseline_mb": mb(baseline), "rss_peak_mb": mb(peak),
                "rss_end_mb": mb(end), "rss_end_vs_baseline": round(end / baseline - 1, 4),
                "stubs_settled_at_end": settled, "stubs_rss_baseline_mb": mb(stubs_baseline), "stubs_rss_end_mb": mb(stubs_end),
                "rss_after_each_cycle_mb": [mb(v) for v in samples],
                "gpu_memory_baseline_mb": mb(gpu_baseline), "gpu_memory_peak_mb": mb(max(gpu_values)) if gpu_values else None,
                "gpu_memory_end_mb": mb(gpu_end),
                "gpu_memory_end_vs_baseline": round(gpu_end / gpu_baseline - 1, 4) if gpu_baseline and gpu_end else None,
                "gpu_memory_after_each_cycle_mb": [mb(v) for v in gpu_samples],
                "background_samples": sampler.count, "sample_errors": sampler.errors[:3],
                "neighbour_requests": len(records), "neighbour_failures": sum(1 for r in records if r.error),
                "neighbour_failure_examples": [r.error for r in records if r.error][:3],
                "neighbour_p99_before_ms": p99_ms(records, before_start, switches_start),
                "neighbour_p99_during_ms": p99_ms(records, switches_start, switches_end),
            })
            before, during = result["neighbour_p99_before_ms"], result["neighbour_p99_during_ms"]
            result["neighbour_p99_ratio"] = round(during / before, 3) if before and during else None
            if args.gap_s:
                switching = p99_ms(records, switches_start, switches_end, windows, inside=True)
                quiet = p99_ms(records, switches_start, switches_end, windows, inside=False)
                result.update(neighbour_p99_switching_ms=switching, neighbour_p99_pauses_ms=quiet,
                              neighbour_p99_ratio_interleaved=round(switching / quiet, 3) if switching and quiet else None)
    except BaseException as exc:  # cut short (a signal, a failed switch): what was measured is kept, marked so
        result["stopped_by"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        result["script_wall_s"] = round(time.monotonic() - t_start, 1)
        save()
        if out:  # the replicas' log tails (stopped by now), also when a start failed
            tails = [f"=== {log}\n" + log.read_text(errors="replace")[-100_000:] for log in sorted((work / "home").rglob("*.log"))]
            out.with_suffix(".server.log").write_text("\n".join(tails))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    return 0 if result["neighbour_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
