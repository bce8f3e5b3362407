"""The pure parts of perf and tune: window stability, the search space, the searches, config revision state."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from controlplane.errors import NotFoundError, UsageError
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
from controlplane.perf.windows import WindowPolicy, is_stable
from controlplane.release.config_revisions import RevisionState
from controlplane.triton.load import LoadResult, Record


@dataclass(frozen=True)
class P:
    level: float
    requests_per_s: float
    p99_ms: float | None
    errors: int = 0


def window(rate: float, latency_ms: float) -> LoadResult:
    n = int(rate)
    return LoadResult(tuple(Record(0, "", "", i / n, i / n + latency_ms / 1000, "") for i in range(n)), 1.0)


def test_a_point_is_stable_when_three_windows_agree_within_ten_percent():
    policy = WindowPolicy(seconds=1)
    assert is_stable([window(1000, 5), window(100, 50), window(1000, 5), window(1040, 5.2), window(980, 4.9)], policy)
    assert not is_stable([window(1000, 5), window(1300, 5), window(1000, 5)], policy)  # throughput disagrees
    assert not is_stable([window(1000, 5), window(1000, 7), window(1000, 5)], policy)  # p99 disagrees
    assert not is_stable([window(1000, 5), window(1000, 5)], policy)  # too few
    with pytest.raises(UsageError):
        WindowPolicy(stable_windows=3, max_windows=2)


def surface(candidate: Candidate) -> Evaluation:
    """A made-up model: batching helps with a delay up to 1 ms, a second instance helps a little; p99 grows
    with the level and the delay."""
    base = 100 * (2.0 if candidate.batching else 1.0) * (1.2 if candidate.instances == 2 else 1.0)
    base *= 1 + min(candidate.delay_us, 1000) / 2000 + (0.1 if candidate.preferred == "halves" else 0)
    base *= 1.05 if candidate.max_batch_size == 32 else 1.0
    points = tuple(P(c, base * min(c, 4) / 4, 1 + c * 0.5 + candidate.delay_us / 1000) for c in (1, 2, 4, 8))
    return Evaluation(candidate, points)


def test_coordinate_search_finds_the_grid_best_with_fewer_configs():
    space, budget = Space(), Budget(p99_ms=4.5)
    calls: list[Candidate] = []
    found = coordinate_search(lambda c: calls.append(c) or surface(c), space, budget)
    grid = grid_search(surface, space, budget)
    assert len(calls) == len(set(calls)) == len(found)  # every config measured once
    assert len(found) < len(grid) / 2
    assert best_of(found, budget).score(budget) == best_of(grid, budget).score(budget)
    assert best_of(grid, budget).candidate == Candidate(2, True, 32, 1000, "halves")


def test_no_config_meets_the_budget_and_the_closest_is_shown():
    budget = Budget(p99_ms=0.5)
    evaluations = [surface(c) for c in Space(instances=(1,), max_batch_size=(8,)).grid()]
    assert best_of(evaluations, budget) is None
    _, point = closest(evaluations, budget)
    assert point.p99_ms == min(p.p99_ms for e in evaluations for p in e.points)
    floor = Budget(p99_ms=100, min_throughput=10_000)  # met on latency, never on throughput
    assert best_of(evaluations, floor) is None and closest(evaluations, floor)[1].p99_ms <= 100


def test_pareto_keeps_only_undominated_points():
    e = Evaluation(Candidate(), (P(1, 100, 2), P(2, 150, 3), P(4, 140, 5), P(8, 200, 9), P(16, 90, 1, errors=1)))
    assert [p.requests_per_s for _, p in pareto([e])] == [100, 150, 200]


def test_the_space_counts_settings_that_make_no_difference_once():
    space = Space(instances=(1, 2), max_batch_size=(8, 32), delay_us=(0, 500), preferred=("none", "halves"))
    grid = space.grid()
    assert len(grid) == len(set(grid)) == 2 * (2 * 2 * 2 + 2)  # batching off: only instances and max batch vary
    assert space.capped(16).max_batch_size == (8,) and space.capped(4).max_batch_size == (4,)
    assert Candidate(1, True, 32, 0, "halves").preferred_sizes() == (16, 32)
    with pytest.raises(UsageError):
        Space(instances=())


def test_a_candidate_written_into_a_config_reads_back():
    from controlplane.model.config import ServingOptions, build_config
    from controlplane.model.signature import Signature, TensorSpec

    base = build_config("m", "onnx", Signature((TensorSpec("x", "float32", (4,)),), (TensorSpec("y", "float32", (2,)),), 64),
                        ServingOptions(max_queue_size=10))
    for candidate in (Candidate(2, True, 32, 700, "halves"), Candidate(3, False, 16)):
        config = apply_candidate(base, candidate)
        assert candidate_of(config) == candidate.canonical()
    kept = apply_candidate(base, Candidate(1, True, 8, 100))
    assert kept.dynamic_batching.default_queue_policy.max_queue_size == 10  # the queue policy survives a tune


def test_config_revisions_roll_back_like_versions():
    state = RevisionState("m")
    state, first = state.add({"instances": 2}, 1, {}, "t1", "u")
    state, second = state.add({"instances": 1}, 1, {}, "t2", "u")
    state = state.move("apply", "prod", first.revision, 1, "t3", "u").move("apply", "prod", second.revision, 2, "t4", "u")
    assert state.held("prod") == 2 and state.held("staging") == 0
    assert state.rollback_target("prod") == 1
    state = state.move("rollback", "prod", 1, 2, "t5", "u")
    assert state.rollback_target("prod") == 0  # repeated rollbacks walk further back
    assert RevisionState.from_json(state.to_json(), "x") == state
    with pytest.raises(NotFoundError):
        state.get(7)
    with pytest.raises(NotFoundError):
        RevisionState("m").rollback_target("prod")


def test_coordinate_search_stays_in_the_space():
    space = Space(instances=(1,), max_batch_size=(8,), delay_us=(2000,))
    seen: list[Candidate] = []

    def worse_with_batching(candidate: Candidate) -> Evaluation:
        seen.append(candidate)
        return Evaluation(candidate, (P(1, 50 if candidate.batching else 100, 1),))

    coordinate_search(worse_with_batching, space, Budget(10))
    assert set(seen) == set(space.grid()) and len(seen) == 3  # both branches, each config once


def test_instance_kind_is_searched_only_where_the_space_names_it():
    from controlplane.model.config import ServingOptions, build_config
    from controlplane.model.signature import Signature, TensorSpec

    assert {c.instance_kind for c in Space().grid()} == {""}  # as published: a CPU host searches what it did
    space = Space(instances=(1,), batching=(True,), max_batch_size=(8,), delay_us=(0,), preferred=("none",), instance_kind=("gpu", "cpu"))
    assert [c.instance_kind for c in space.grid()] == ["gpu", "cpu"] and space.start().instance_kind == "gpu"
    base = build_config("m", "torchscript", Signature((TensorSpec("x", "float16", (4,)),), (TensorSpec("y", "float16", (2,)),), 64),
                        ServingOptions(instance_kind="gpu"))
    assert apply_candidate(base, Candidate(2)).instance_group[0].kind == base.instance_group[0].kind  # "" keeps it
    cpu = apply_candidate(base, Candidate(2, instance_kind="cpu")).instance_group[0]
    assert cpu.count == 2 and type(cpu).Kind.Name(cpu.kind) == "KIND_CPU"
    assert Candidate(3, instance_kind="gpu").label().startswith("inst 3 gpu")
    assert Candidate.from_dict({"instances": 2}).instance_kind == ""  # revisions written before kinds read back
    with pytest.raises(UsageError):
        Space(instance_kind=("tpu",))


def test_coordinate_search_begins_at_a_given_start_and_stops_at_its_limit():
    space, budget = Space(), Budget(p99_ms=4.5)
    start = Candidate(2, True, 64, 200, "none")
    seen: list[Candidate] = []
    coordinate_search(lambda c: seen.append(c) or surface(c), space, budget, start=start)
    assert seen[0] == start
    limited: list[Candidate] = []
    found = coordinate_search(lambda c: limited.append(c) or surface(c), space, budget, start=start, stop=lambda n: n >= 4)
    assert len(found) == len(limited) == 4 and limited == seen[:4]
    assert len(grid_search(surface, space, budget, stop=lambda n: n >= 3)) == 3


def surface_point(candidate: Candidate, level: int) -> P:
    """`surface`'s model at one load level."""
    return next(p for p in surface(candidate).points if p.level == level)


def test_a_climb_stops_where_throughput_stops_rising_or_p99_breaks_the_budget():
    levels, asked = (1, 2, 4, 8, 16, 32), []

    def saturating(level: int) -> P:  # throughput flat from 8 clients on, p99 2 ms per client
        asked.append(level)
        return P(level, 100 * min(level, 8), 2.0 * level)

    points = climb(saturating, levels, Budget(p99_ms=100), start=4)
    assert asked == [4, 8, 16] and [p.level for p in points] == [4, 8, 16]  # 16 gains nothing: 32 is not measured
    asked.clear()
    climb(saturating, levels, Budget(p99_ms=20), start=16)  # over the budget at the start: down to where it is met
    assert asked == [16, 8]
    asked.clear()
    climb(saturating, levels, Budget(p99_ms=20), start=None)  # from the lowest; 16 breaks the budget
    assert asked == [1, 2, 4, 8, 16]
    stalls = iter([True])

    def one_stall(level: int) -> P:  # the first measurement at 8 clients meets a stall of the host
        asked.append(level)
        return P(level, 100 * level, 500.0 if level == 8 and next(stalls, False) else 1.0)

    asked.clear()
    points = climb(one_stall, (4, 8, 16), Budget(p99_ms=10), start=8, confirm=True)
    assert asked == [8, 8, 16] and max(p.requests_per_s for p in points) == 1600  # measured again, then believed


def test_the_coarse_set_leaves_preferred_sizes_and_batching_off_max_batch_out():
    space = Space(instances=(1, 2), max_batch_size=(8, 32), delay_us=(0, 500), preferred=("none", "halves"))
    coarse = space.coarse()
    assert len(coarse) == 2 * 2 * 2 + 2 and set(coarse) <= set(space.grid())
    assert {c.preferred for c in coarse} == {"none"}
    assert {(c.instances, c.max_batch_size) for c in coarse if not c.batching} == {(1, 32), (2, 32)}


def test_halving_search_finds_the_grid_best_with_a_third_of_the_full_measurements():
    space, budget, levels = Space(), Budget(p99_ms=4.5), (1, 2, 4, 8)
    trials: list[Trial] = []

    def evaluate(trial: Trial) -> Evaluation:
        trials.append(trial)
        return Evaluation(trial.candidate, climb(lambda level: surface_point(trial.candidate, level), levels, budget, trial.from_level),
                          trial.screening)

    found = halving_search(evaluate, space, budget)
    grid = grid_search(surface, space, budget)
    screened = [t for t in trials if t.screening]
    full = [t for t in trials if not t.screening]
    assert [t.candidate for t in screened] == list(dict.fromkeys([space.start(), *space.coarse()]))
    assert screened[0].from_level is None and all(t.from_level == 4 for t in screened[1:])  # where the leader scored
    assert len(full) == len({t.candidate for t in full}) <= len(grid) / 3
    best = best_of(found, budget)
    assert not best.screening and best.candidate == best_of(grid, budget).candidate == Candidate(2, True, 32, 1000, "halves")
    assert sum(len(e.points) for e in found) < sum(len(e.points) for e in grid) / 2
    assert {c for c, _ in pareto(found)} <= {t.candidate for t in full}  # judged on full windows only


def test_halving_search_stops_at_its_limit_with_what_it_screened():
    space, budget = Space(), Budget(p99_ms=4.5)
    found = halving_search(lambda t: Evaluation(t.candidate, surface(t.candidate).points, t.screening), space, budget,
                           stop=lambda n: n >= 3)
    assert len(found) == 3 and all(e.screening for e in found)
    assert best_of(found, budget) is not None  # a limit that cut the screen short still names a best
