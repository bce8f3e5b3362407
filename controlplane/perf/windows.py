"""perf_analyzer's measurement method, as pure functions: a load point runs in windows; the first are discarded
(warm-up); the point is stable when the last few windows agree on throughput and p99 within a tolerance; the
figures of a point are those of its stable windows pooled together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controlplane.defaults import (
    PERF_MAX_WINDOWS,
    PERF_STABILITY,
    PERF_STABLE_WINDOWS,
    PERF_WARMUP_WINDOWS,
    PERF_WINDOW_S,
)
from controlplane.errors import UsageError
from controlplane.triton.load import LoadResult


@dataclass(frozen=True)
class WindowPolicy:
    seconds: float = PERF_WINDOW_S
    stable_windows: int = PERF_STABLE_WINDOWS
    tolerance: float = PERF_STABILITY
    warmup_windows: int = PERF_WARMUP_WINDOWS
    max_windows: int = PERF_MAX_WINDOWS

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.stable_windows < 1 or self.tolerance <= 0 or self.warmup_windows < 0:
            raise UsageError("a measurement window must be positive, with at least one window to compare")
        if self.max_windows < self.stable_windows:
            raise UsageError(f"at most {self.max_windows} windows cannot hold {self.stable_windows} stable ones")


def p99_ms(result: LoadResult) -> float | None:
    return result.percentile_ms(99)


def agree(values: Sequence[float], tolerance: float) -> bool:
    """Every value within `tolerance` (a share) of their mean."""
    mean = float(np.mean(values))
    return mean > 0 and all(abs(v - mean) <= tolerance * mean for v in values)


def is_stable(windows: Sequence[LoadResult], policy: WindowPolicy) -> bool:
    """The last `stable_windows` windows agree on throughput and on p99 (a window with no answer never does)."""
    last = list(windows)[-policy.stable_windows:]
    if len(last) < policy.stable_windows:
        return False
    latencies = [p99_ms(w) for w in last]
    if any(v is None for v in latencies):
        return False
    return agree([w.requests_per_s for w in last], policy.tolerance) and agree(latencies, policy.tolerance)


@dataclass(frozen=True)
class PointFigures:
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_examples: tuple[str, ...]


def pooled(windows: Sequence[LoadResult]) -> PointFigures:
    """The figures of windows taken together: every request counts once, throughput over their summed time."""
    records = [r for w in windows for r in w.records]
    seconds = sum(w.elapsed_s for w in windows)
    latencies = [r.latency_s * 1000 for r in records if not r.error]
    errors = [r.error for r in records if r.error]

    def q(p: float) -> float | None:
        return round(float(np.percentile(latencies, p)), 3) if latencies else None

    rate = len(latencies) / seconds if seconds > 0 else 0.0
    return PointFigures(len(records), len(errors), round(seconds, 3), round(rate, 1), q(50), q(90), q(95), q(99),
                        tuple(dict.fromkeys(errors))[:3])
