"""Searches over the tune space, pure over an `evaluate(candidate) -> Evaluation` the caller provides:

- `coordinate_search`: from a start, try every value of one dimension with the others fixed, keep the best,
  move to the next dimension; passes repeat until one gains less than `stall_gain`. Each candidate is measured
  once (a cache), so later passes cost only what is new. It may begin at a given candidate (e.g. the settings the
  model is published with) instead of the space's own start.
- `grid_search`: every candidate of the space: the reference a search is judged against.

A candidate's score is its best throughput among load points that meet the latency budget with no errors
(0 when none does, or when it is under the throughput floor).

Both take `stop(measured) -> bool`, asked before each new candidate: when it says so (a time or count limit), the
search ends and returns what it has measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from controlplane.defaults import TUNE_STALL_GAIN
from controlplane.perf.tune.space import Candidate, Space

Progress = Callable[[str], None]
Stop = Callable[[int], bool]


class _Stopped(Exception):
    """The search's `stop` said so: end it with what is measured."""


class LoadPoint(Protocol):
    level: float
    requests_per_s: float
    p99_ms: float | None
    errors: int


@dataclass(frozen=True)
class Budget:
    p99_ms: float
    min_throughput: float = 0.0

    def met_by(self, point: LoadPoint) -> bool:
        return point.errors == 0 and point.p99_ms is not None and point.p99_ms <= self.p99_ms


@dataclass(frozen=True)
class Evaluation:
    candidate: Candidate
    points: tuple[LoadPoint, ...]

    def best_point(self, budget: Budget) -> LoadPoint | None:
        meeting = [p for p in self.points if budget.met_by(p)]
        return max(meeting, key=lambda p: p.requests_per_s) if meeting else None

    def rank(self, budget: Budget) -> tuple[float, float]:
        """What a search compares: the score, then (between configs that score alike, e.g. none meets the
        budget) the lower p99 at its lightest load."""
        first = next((p.p99_ms for p in self.points if p.errors == 0 and p.p99_ms is not None), None)
        return self.score(budget), -first if first is not None else float("-inf")

    def score(self, budget: Budget) -> float:
        best = self.best_point(budget)
        return best.requests_per_s if best is not None and best.requests_per_s >= budget.min_throughput else 0.0


def coordinate_search(evaluate: Callable[[Candidate], Evaluation], space: Space, budget: Budget,
                      stall_gain: float = TUNE_STALL_GAIN, max_passes: int = 3, progress: Progress | None = None,
                      start: Candidate | None = None, stop: Stop | None = None) -> list[Evaluation]:
    """One descent per value of `batching`: with batching off, delay and preferred sizes do nothing, so a single
    descent that turned batching off early would never try them (a tree-shaped space searched branch by branch).
    `start` begins the descent of its own batching value (the other branch begins at the space's start)."""
    say = progress or (lambda _m: None)
    done: dict[Candidate, Evaluation] = {}

    def measured(candidate: Candidate) -> Evaluation:
        if candidate not in done:
            if stop is not None and stop(len(done)):
                raise _Stopped
            done[candidate] = evaluate(candidate)
            say(f"{candidate.label()}: {done[candidate].score(budget):.1f} req/s under the budget")
        return done[candidate]

    branches = sorted(space.batching, key=lambda b: start is None or b != start.batching)  # the start's branch first
    try:
        for batching in branches:
            branch = replace(space, batching=(batching,))
            first = branch.within(start) if start is not None and start.batching == batching else branch.start()
            current = measured(first)
            for number in range(max_passes):
                before = current.score(budget)
                for dimension in Space.DIMENSIONS:
                    for candidate in branch.along(current.candidate, dimension):
                        trial = measured(candidate)
                        if trial.rank(budget) > current.rank(budget):
                            current = trial
                gain = (current.score(budget) - before) / before if before > 0 else (1.0 if current.score(budget) > 0 else 0.0)
                say(f"batching {'on' if batching else 'off'}, pass {number + 1}: best {current.score(budget):.1f} req/s "
                    f"({current.candidate.label()})")
                if gain < stall_gain:
                    break
    except _Stopped:
        say(f"search stopped at its limit after {len(done)} configs")
    return list(done.values())


def grid_search(evaluate: Callable[[Candidate], Evaluation], space: Space, budget: Budget,
                progress: Progress | None = None, stop: Stop | None = None) -> list[Evaluation]:
    say = progress or (lambda _m: None)
    evaluations: list[Evaluation] = []
    for candidate in space.grid():
        if stop is not None and stop(len(evaluations)):
            say(f"search stopped at its limit after {len(evaluations)} configs")
            break
        evaluations.append(evaluate(candidate))
        say(f"{candidate.label()}: {evaluations[-1].score(budget):.1f} req/s under the budget")
    return evaluations


def best_of(evaluations: Sequence[Evaluation], budget: Budget) -> Evaluation | None:
    scored = [e for e in evaluations if e.score(budget) > 0]
    return max(scored, key=lambda e: e.score(budget)) if scored else None


def closest(evaluations: Sequence[Evaluation], budget: Budget) -> tuple[Candidate, LoadPoint] | None:
    """When nothing meets the budget: the error-free point nearest to it (lowest p99; under a throughput floor,
    the highest throughput within the latency budget)."""
    points = [(e.candidate, p) for e in evaluations for p in e.points if p.errors == 0 and p.p99_ms is not None]
    within = [cp for cp in points if cp[1].p99_ms <= budget.p99_ms]
    if within:
        return max(within, key=lambda cp: cp[1].requests_per_s)
    return min(points, key=lambda cp: cp[1].p99_ms) if points else None


def pareto(evaluations: Sequence[Evaluation]) -> list[tuple[Candidate, LoadPoint]]:
    """Error-free points no other point beats on both throughput and p99, by throughput."""
    points = [(e.candidate, p) for e in evaluations for p in e.points if p.errors == 0 and p.p99_ms is not None]
    front = [cp for cp in points
             if not any(o[1].requests_per_s >= cp[1].requests_per_s and o[1].p99_ms <= cp[1].p99_ms
                        and (o[1].requests_per_s, o[1].p99_ms) != (cp[1].requests_per_s, cp[1].p99_ms) for o in points)]
    return sorted(front, key=lambda cp: cp[1].requests_per_s)
