"""What the CPU benchmarks share: the closed-loop load (the package's one load generator) measured with the
load generator's own CPU share, the row every load point reports, and where results are written.

gpu_bench.py does not import this: it runs on a GPU machine with only the package and its dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path

from controlplane.triton.load import AsyncCaller, LoadResult, run_async


def cpu_seconds() -> float:
    """CPU time of this process (user + system), all threads."""
    t = os.times()
    return t.user + t.system


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a server and its worker or stub processes), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # it exited meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) of a process and its live descendants, from /proc/<pid>/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def summary_row(result: LoadResult, rows_per_request: int = 1, cpu_s: float | None = None) -> dict:
    """Throughput, latency percentiles, failures and, when measured, the share of the machine's CPUs the
    load generator used (None where the load is the computation itself)."""
    percentiles = {f"p{q}_ms": None if (ms := result.percentile_ms(q)) is None else round(ms, 3) for q in (50, 95, 99)}
    return {
        "requests_per_s": round(result.requests_per_s, 1),
        "rows_per_s": round(result.requests_per_s * rows_per_request, 1),
        **percentiles,
        "failures": result.failures,
        "loadgen_cpu_share": None if cpu_s is None else round(cpu_s / result.elapsed_s / (os.cpu_count() or 1), 3),
    }


async def measured(make_caller: Callable[[int], AsyncCaller], concurrency: int, seconds: float) -> dict:
    """A closed-loop async load from this process, reported as a row with its CPU share."""
    cpu_before = cpu_seconds()
    result = await run_async(make_caller, concurrency, seconds)
    return summary_row(result, cpu_s=cpu_seconds() - cpu_before)


def load_arguments() -> argparse.ArgumentParser:
    """The options of a closed-loop benchmark: seconds per point, the concurrency sweep, the output folder."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=levels, default=levels("1,4,16,64"))
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    return parser


def levels(text: str) -> list[int]:
    return [int(value) for value in text.split(",")]


def write_json(out: Path, name: str, results) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(results, indent=2))
    return path
