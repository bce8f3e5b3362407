"""Which load levels one config is measured at (pure, over a `measure(level) -> point` the caller provides).

A config's score is its best throughput among points within the budget. In a closed loop, throughput rises with
clients until the server saturates and p99 only grows, so that best point is where the climb stops gaining or
breaks the budget: `climb` measures from a start level (for a search, the level where the leading config scored)
upward while each step stays within the budget and adds at least `min_gain`, or downward from a start over the
budget until a level meets it. Most configs then cost two or three points instead of every level of the sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from controlplane.defaults import TUNE_LEVEL_GAIN
from controlplane.perf.tune.search import Budget, LoadPoint


def climb(measure: Callable[[int], LoadPoint], levels: Sequence[int], budget: Budget, start: float | None = None,
          min_gain: float = TUNE_LEVEL_GAIN, confirm: bool = False) -> tuple[LoadPoint, ...]:
    """Points by level, beginning at `start` (the nearest of `levels` at or below it; the lowest when None).
    `confirm`: a start over the budget is measured once more before the climb turns down (one stall of a shared
    host is not the config's limit); the second measurement is kept. A step up is not: a search starts a config
    where an earlier measurement found its best, so the level above was already seen to gain nothing or break."""
    ordered = sorted(set(levels))
    below = [i for i, level in enumerate(ordered) if start is not None and level <= start]
    index = below[-1] if below else 0
    points: list[LoadPoint] = []

    def at(i: int, again: bool = False) -> LoadPoint:
        point = measure(ordered[i])
        if again and not budget.met_by(point):
            point = measure(ordered[i])
        points.append(point)
        return point

    best = at(index, confirm)
    if budget.met_by(best):
        for i in range(index + 1, len(ordered)):
            point = at(i)
            if not budget.met_by(point) or point.requests_per_s < best.requests_per_s * (1 + min_gain):
                break
            best = point
    else:
        for i in range(index - 1, -1, -1):
            if budget.met_by(at(i)):
                break
    return tuple(sorted(points, key=lambda p: p.level))
