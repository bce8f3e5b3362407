"""Searches over the tune space, pure over an `evaluate` the caller provides:

- `halving_search` (the default): successive halving. Every candidate of the space's coarse set is screened with
  short windows, each beginning at the load level where the leading config scored (levels.py's climb: a few points,
  not a sweep); the best third is measured again with full windows from its own best level; then the dimensions the
  screen left out (preferred sizes) are refined around the best of each batching branch until a round gains less
  than `stall_gain`. Only full-window evaluations are judged (best, Pareto, closest); the screen's are kept, marked.
- `coordinate_search`: from a start, try every value of one dimension with the others fixed, keep the best,
  move to the next dimension; passes repeat until one gains less than `stall_gain`. Each candidate is measured
  once (a cache), so later passes cost only what is new. It may begin at a given candidate (e.g. the settings the
  model is published with) instead of the space's own start.
- `grid_search`: every candidate of the space: the reference a search is judged against.

A candidate's score is its best throughput among load points that meet the latency budget with no errors
(0 when none does, or when it is under the throughput floor).

Each takes `stop(measured) -> bool`, asked before each new candidate: when it says so (a time or count limit), the
search ends and returns what it has measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from controlplane.defaults import TUNE_KEEP_MIN, TUNE_KEEP_SHARE, TUNE_STALL_GAIN
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
    screening: bool = False  # measured with the halving search's short windows: ranks the screen, judges nothing

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


@dataclass(frozen=True)
class Trial:
    """What the halving search asks to measure: a candidate, with short screening windows or full ones, beginning
    at a load level (None: the lowest)."""
    candidate: Candidate
    screening: bool = False
    from_level: float | None = None


def halving_search(evaluate: Callable[[Trial], Evaluation], space: Space, budget: Budget,
                   keep_share: float = TUNE_KEEP_SHARE, keep_min: int = TUNE_KEEP_MIN, stall_gain: float = TUNE_STALL_GAIN,
                   max_rounds: int = 3, progress: Progress | None = None, start: Candidate | None = None,
                   stop: Stop | None = None) -> list[Evaluation]:
    """Screen the coarse set (`start`, e.g. the published settings, first), measure the best `keep_share` (at least
    `keep_min`) again with full windows, refine the FINE dimensions. `stop(measurements so far)` is asked before each
    measurement."""
    say = progress or (lambda _m: None)
    evaluations: list[Evaluation] = []
    full: dict[Candidate, Evaluation] = {}

    def run(trial: Trial) -> Evaluation:
        if stop is not None and stop(len(evaluations)):
            raise _Stopped
        evaluations.append(evaluate(trial))
        say(f"{'screen' if trial.screening else 'full'}: {trial.candidate.label()}: "
            f"{evaluations[-1].score(budget):.1f} req/s under the budget")
        if not trial.screening:
            full[trial.candidate] = evaluations[-1]
        return evaluations[-1]

    def ranked(group) -> list[Evaluation]:
        return sorted(group, key=lambda e: e.rank(budget), reverse=True)

    first = space.within(start) if start is not None else space.start()
    try:
        leader: Evaluation | None = None
        for candidate in dict.fromkeys([first, *space.coarse()]):
            screened = run(Trial(candidate, True, None if leader is None else level_of(leader, budget)))
            if leader is None or screened.rank(budget) > leader.rank(budget):
                leader = screened
        screen = ranked(evaluations)
        kept = screen[:max(keep_min, math.ceil(len(screen) * keep_share))]
        say(f"screened {len(screen)} configs; {len(kept)} measured again with full windows")
        for screened in kept:
            run(Trial(screened.candidate, False, level_of(screened, budget)))
        for batching in space.batching:  # each branch's best: the screen may rank a whole branch a little low
            branch = [e for e in full.values() if e.candidate.batching == batching]
            if not branch:
                continue
            current = ranked(branch)[0]
            for _ in range(max_rounds):
                before = current.score(budget)
                for dimension in space.FINE:
                    for candidate in space.along(current.candidate, dimension):
                        trial = full.get(candidate) or run(Trial(candidate, False, level_of(current, budget)))
                        if trial.rank(budget) > current.rank(budget):
                            current = trial
                if current.score(budget) <= before * (1 + stall_gain):
                    break
        best = ranked(full.values())[0]
        say(f"best: {best.score(budget):.1f} req/s ({best.candidate.label()}), {len(evaluations)} measurements")
    except _Stopped:
        say(f"search stopped at its limit after {len(evaluations)} measurements")
    return evaluations


def level_of(evaluation: Evaluation, budget: Budget) -> float | None:
    """Where a config scored (its best point within the budget), else its lowest level measured: where the next
    measurement of it, or of a config like it, begins."""
    best = evaluation.best_point(budget)
    if best is not None:
        return best.level
    return min((p.level for p in evaluation.points), default=None)


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


def settled(evaluations: Sequence[Evaluation]) -> list[Evaluation]:
    """The evaluations a result is judged on: those with full windows (the screen's only, when a limit ended the
    search before any was measured again)."""
    full = [e for e in evaluations if not e.screening]
    return full or list(evaluations)


def best_of(evaluations: Sequence[Evaluation], budget: Budget) -> Evaluation | None:
    scored = [e for e in settled(evaluations) if e.score(budget) > 0]
    return max(scored, key=lambda e: e.score(budget)) if scored else None


def closest(evaluations: Sequence[Evaluation], budget: Budget) -> tuple[Candidate, LoadPoint] | None:
    """When nothing meets the budget: the error-free point nearest to it (lowest p99; under a throughput floor,
    the highest throughput within the latency budget)."""
    points = [(e.candidate, p) for e in settled(evaluations) for p in e.points if p.errors == 0 and p.p99_ms is not None]
    within = [cp for cp in points if cp[1].p99_ms <= budget.p99_ms]
    if within:
        return max(within, key=lambda cp: cp[1].requests_per_s)
    return min(points, key=lambda cp: cp[1].p99_ms) if points else None


def pareto(evaluations: Sequence[Evaluation]) -> list[tuple[Candidate, LoadPoint]]:
    """Error-free points no other point beats on both throughput and p99, by throughput."""
    points = [(e.candidate, p) for e in settled(evaluations) for p in e.points if p.errors == 0 and p.p99_ms is not None]
    front = [cp for cp in points
             if not any(o[1].requests_per_s >= cp[1].requests_per_s and o[1].p99_ms <= cp[1].p99_ms
                        and (o[1].requests_per_s, o[1].p99_ms) != (cp[1].requests_per_s, cp[1].p99_ms) for o in points)]
    return sorted(front, key=lambda cp: cp[1].requests_per_s)
