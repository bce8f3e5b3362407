"""A tune run: each candidate config of a published model version is loaded on a scratch Triton (one started
from the wheel for the run, or a named one; configs are swapped through the model-control API, never by a
restart), measured with perf's windows, and searched (successive halving, coordinate descent, or the whole grid).
The halving search climbs each config's concurrency from where the leading config scored (levels.py) and screens
with short windows; the others sweep the levels in order. Nothing here touches a channel: applying the result is
release/config_revisions.py's job."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from controlplane.errors import CheckFailedError
from controlplane.model import config as model_config
from controlplane.model.config import VersionPolicy
from controlplane.perf.measure import PerfSession, Point
from controlplane.perf.tune.levels import climb
from controlplane.perf.tune.search import (
    Budget,
    Evaluation,
    Trial,
    best_of,
    closest,
    coordinate_search,
    grid_search,
    halving_search,
    pareto,
)
from controlplane.perf.tune.space import Candidate, Space, apply_candidate, candidate_of
from controlplane.perf.windows import WindowPolicy
from controlplane.store.repository import Repository

Progress = Callable[[str], None]
SEARCHES = ("halving", "coordinate", "grid")


@dataclass(frozen=True)
class TunePlan:
    budget: Budget
    space: Space = field(default_factory=Space)
    levels: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    policy: WindowPolicy = field(default_factory=lambda: WindowPolicy(seconds=0.5))
    search: str = "halving"
    rows: int = 1
    start: Candidate | None = None  # where a descent begins, or the config screened first [default: the space's start]
    max_seconds: float | None = None  # no new config is tried after this long (the one in progress finishes)
    max_configs: int | None = None  # measurements: a config screened and then measured again counts twice

    def screen_policy(self) -> WindowPolicy:
        """The halving search's screening windows: half as long, two agreeing within 20 %, at most three (a screen
        only ranks configs; the kept ones are measured again with `policy`)."""
        return replace(self.policy, seconds=max(0.1, self.policy.seconds / 2), stable_windows=2, tolerance=0.2,
                       max_windows=3)

    def limit_reached(self, started: float, measured: int) -> bool:
        return ((self.max_configs is not None and measured >= self.max_configs)
                or (self.max_seconds is not None and time.monotonic() - started >= self.max_seconds))


@dataclass(frozen=True)
class TuneResult:
    model: str
    version: int
    budget: Budget
    search: str
    baseline: Candidate  # the settings the model is published with
    evaluations: tuple[Evaluation, ...]
    best: Evaluation | None
    wall_s: float
    stopped_at_limit: bool = False  # a time or config limit ended the search before it converged

    def best_point(self) -> Point | None:
        return self.best.best_point(self.budget) if self.best else None

    @property
    def configs_tried(self) -> int:
        return len({e.candidate for e in self.evaluations})

    def closest(self):
        return closest(self.evaluations, self.budget)

    def pareto(self):
        return pareto(self.evaluations)

    def to_dict(self) -> dict:
        point = self.best_point()
        near = None if self.best else self.closest()
        return {
            "model": self.model, "version": self.version, "search": self.search, "wall_s": round(self.wall_s, 1),
            "budget": {"p99_ms": self.budget.p99_ms, "min_throughput": self.budget.min_throughput},
            "configs_tried": self.configs_tried, "measurements": len(self.evaluations), "stopped_at_limit": self.stopped_at_limit,
            "load_points": sum(len(e.points) for e in self.evaluations),
            "baseline": self.baseline.to_dict(),
            "best": None if self.best is None else {"config": self.best.candidate.to_dict(), "point": point.to_dict()},
            "closest": None if near is None else {"config": near[0].to_dict(), "point": near[1].to_dict()},
            "pareto": [{"config": c.to_dict(), "label": c.label(), "point": p.to_dict()} for c, p in self.pareto()],
            "evaluations": [{"config": e.candidate.to_dict(), "score": e.score(self.budget), "screening": e.screening,
                             "points": [p.to_dict() for p in e.points]} for e in self.evaluations],
        }


def sweep_candidate(session: PerfSession, levels: tuple[int, ...], budget: Budget, exhaustive: bool) -> tuple[Point, ...]:
    """Concurrency levels in order; unless `exhaustive`, stop at the first point over the budget twice: more clients
    only queue longer (a stop on a small gain is no saving: on a shared host one noisy step would end the sweep
    below the levels where batching pays)."""
    points: list[Point] = []
    for level in levels:
        point = session.point("concurrency", level)
        if not exhaustive and not budget.met_by(point):
            point = session.point("concurrency", level)  # measured again before pruning: one stall of a shared host
            if not budget.met_by(point):                  # is not a config's limit
                points.append(point)
                break
        points.append(point)
    return tuple(points)


@contextmanager
def scratch_triton(repo: Repository, home: Path, url: str | None) -> Iterator[str]:
    """A Triton gRPC url to tune on: `url` as given, or a server started from the wheel for this run (no model
    loaded; stopped on the way out)."""
    if url:
        yield url
        return
    from controlplane.readiness import free_port
    from controlplane.triton.server.local import LocalServers, ServerOptions

    servers, name = LocalServers(home), f"tune-{os.getpid()}"
    state = servers.start(ServerOptions(repository=repo.uri, name=name, models=(), http_port=free_port(), grpc_port=free_port(),
                                        metrics_port=free_port(), exit_timeout_s=5))
    try:
        yield state.grpc_url
    finally:
        servers.stop(name, grace_s=10)


def tune(repo: Repository, model: str, version: int, plan: TunePlan, home: Path, url: str | None = None,
         control_key: str | None = None, progress: Progress | None = None) -> TuneResult:
    """Search the plan's space for `model` `version` (published: NotFoundError otherwise) on a scratch Triton."""
    from controlplane.perf.inputs import random_inputs
    from controlplane.triton.replicas import Replica

    say = progress or (lambda _m: None)
    if plan.search not in SEARCHES:
        raise CheckFailedError(f"search {plan.search!r} is not one of {', '.join(SEARCHES)}")
    repo.manifest(model, version)  # an unpublished model or version says so before any server starts
    base = repo.config(model)
    model_config.apply_version_policy(base, VersionPolicy("specific", (version,)))
    space = plan.space.capped(base.max_batch_size)
    signature = model_config.signature_of(base, api=True)
    inputs = random_inputs(signature, plan.rows)
    started = time.monotonic()
    with scratch_triton(repo, home, url) as grpc_url:
        replica = Replica(grpc_url, control_key)
        session, loaded = None, None
        try:
            def load(candidate: Candidate) -> PerfSession:
                nonlocal session, loaded
                if candidate != loaded:  # the halving search may measure the config just screened again
                    replica.load(model, model_config.to_json(apply_candidate(base, candidate)))
                    replica.wait_serving(model, version, signature)
                    loaded = candidate
                session = session or PerfSession(grpc_url, model, inputs, str(version), plan.policy)
                return session

            def evaluate(candidate: Candidate) -> Evaluation:
                return Evaluation(candidate, sweep_candidate(load(candidate), plan.levels, plan.budget, plan.search == "grid"))

            def evaluate_trial(trial: Trial) -> Evaluation:
                perf = load(trial.candidate)
                screen = plan.screen_policy()
                first, later = (screen, replace(screen, warmup_windows=0)) if trial.screening else (plan.policy, plan.policy)
                policies = iter([first])  # a screen warms up once per config, at its first point

                def measure(level: int) -> Point:
                    return perf.point("concurrency", level, next(policies, later))

                return Evaluation(trial.candidate, climb(measure, plan.levels, plan.budget, trial.from_level, confirm=not trial.screening),
                                  trial.screening)

            stopped = False

            def stop(measured: int) -> bool:
                nonlocal stopped
                stopped = stopped or plan.limit_reached(started, measured)
                return stopped

            if plan.search == "grid":
                evaluations = grid_search(evaluate, space, plan.budget, say, stop=stop)
            elif plan.search == "coordinate":
                evaluations = coordinate_search(evaluate, space, plan.budget, progress=say, start=plan.start, stop=stop)
            else:
                evaluations = halving_search(evaluate_trial, space, plan.budget, progress=say, start=plan.start, stop=stop)
        finally:
            if session is not None:
                session.close()
            if url:  # a named target keeps no tune candidate loaded
                replica.unload(model)
            replica.close()
    return TuneResult(model, version, plan.budget, plan.search, candidate_of(base), tuple(evaluations),
                      best_of(evaluations, plan.budget), time.monotonic() - started, stopped)
