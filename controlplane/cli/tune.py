"""`mlctl tune`: search a model version's serving settings under a latency budget on a scratch Triton; with
--apply, make the best a config revision of a channel. `mlctl config-revision`: list and roll back revisions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controlplane.cli.events import action
from controlplane.cli.render import emit, emit_json, note, table

revision_app = typer.Typer(help="Config revisions: a channel's serving settings, versioned apart from model versions.",
                           no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _ints(text: str, what: str) -> tuple[int, ...]:
    from controlplane.errors import UsageError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise UsageError(f"{what} {text!r} must be whole numbers separated by commas") from exc


@action("tune", channel="to")
def tune(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Published version to tune.")],
    p99_ms: Annotated[float, typer.Option("--p99-ms", help="Latency budget: p99 in milliseconds.")],
    min_throughput: Annotated[float, typer.Option(help="Requests/s the best config must reach at least.")] = 0.0,
    url: Annotated[str | None, typer.Option(help="A scratch Triton's gRPC host:port [default: start one from the wheel].")] = None,
    search: Annotated[str, typer.Option(help="halving (short-window screen of a coarse set, the best third measured again, "
                                              "preferred sizes refined), coordinate (descent) or grid (every config).")] = "halving",
    concurrency: Annotated[str, typer.Option(help="Closed-loop client counts tried per config.")] = "1,2,4,8,16,32",
    instances: Annotated[str, typer.Option(help="Instance counts to search.")] = "1,2",
    max_batch: Annotated[str, typer.Option(help="Max batch sizes to search (capped at the model's).")] = "8,32,64",
    delays_us: Annotated[str, typer.Option(help="Dynamic-batching delays (us) to search.")] = "0,200,1000,4000",
    instance_kind: Annotated[str, typer.Option(help="Instance kinds to search on a GPU target (gpu, cpu) [default: as published].")] = "",
    window_s: Annotated[float, typer.Option("--window-s", help="Measurement window, seconds.")] = 0.5,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the throughput/p99 figure to this PNG.")] = None,
    apply: Annotated[bool, typer.Option("--apply", help="Make the best config a config revision of --to CHANNEL.")] = False,
    to: Annotated[str | None, typer.Option("--to", help="Channel to apply the best config to.")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit history.")] = "",
    json: Json = False,
) -> None:
    """Search instance kind and count, max batch size, batching delay, preferred batch sizes and batching off; print the
    Pareto table (throughput vs p99) and the best config under the budget."""
    from controlplane.cli.lifecycle import lifecycle
    from controlplane.errors import CheckFailedError, UsageError
    from controlplane.perf.tune.run import TunePlan
    from controlplane.perf.tune.run import tune as run_tune
    from controlplane.perf.tune.search import Budget
    from controlplane.perf.tune.space import Space
    from controlplane.perf.windows import WindowPolicy

    if apply and not to:
        raise UsageError("--apply needs --to CHANNEL: the channel whose replicas get the tuned settings")
    if p99_ms <= 0 or min_throughput < 0:
        raise UsageError("--p99-ms must be positive and --min-throughput not negative")
    plan = TunePlan(Budget(p99_ms, min_throughput),
                    Space(_ints(instances, "--instances"), (True, False), _ints(max_batch, "--max-batch"), _ints(delays_us, "--delays-us"),
                          instance_kind=tuple(k.strip() for k in instance_kind.split(",") if k.strip()) or ("",)),
                    _ints(concurrency, "--concurrency"), WindowPolicy(seconds=window_s), search)
    lc = lifecycle(ctx)
    if apply:
        from controlplane.release.config_switch import channel_version

        channel_version(lc, model, to)  # an unknown channel is refused before the search runs
    result = run_tune(lc.repo, model, version, plan, ctx.obj.home, url, ctx.obj.control_key, progress=note)
    if plot:
        _plot(result, plot)
    _show(result, json)
    if result.best is None:
        near = result.closest()
        nearest = "no error-free point at all" if near is None else (
            f"closest: {near[0].label()} at concurrency {near[1].level:g}: {near[1].requests_per_s} req/s, p99 {near[1].p99_ms} ms")
        raise CheckFailedError(f"no config of {model} v{version} meets p99 <= {p99_ms:g} ms"
                               f"{f' at >= {min_throughput:g} req/s' if min_throughput else ''} among {result.configs_tried} tried; "
                               f"{nearest}; nothing applied", hint="raise the budget, or widen the space")
    if apply:
        from controlplane.release.config_switch import apply_revision

        point = result.best_point()
        basis = {"p99_budget_ms": p99_ms, "min_throughput": min_throughput, "search": search, "concurrency": point.level,
                 "requests_per_s": point.requests_per_s, "p99_ms": point.p99_ms}
        switch = apply_revision(lc, model, to, result.best.candidate.to_dict(), version, basis, reason)
        note(f"{model}: channel {to} now serves with config revision {switch.to_revision} "
             f"(was {switch.from_revision}); roll back with 'mlctl config-revision rollback {model} --channel {to}'")


def _show(result, json: bool) -> None:
    if json:
        emit_json(result.to_dict())
        return
    best = result.best
    rows = [[c.label(), f"{p.level:g}", p.requests_per_s, p.p50_ms, p.p99_ms, "yes" if p.p99_ms <= result.budget.p99_ms else "no",
             "*" if best is not None and c == best.candidate and p is result.best_point() else ""] for c, p in result.pareto()]
    emit(table(["config", "clients", "req/s", "p50 ms", "p99 ms", "in budget", "best"], rows))
    emit(f"{result.search} search: {result.configs_tried} configs, {sum(len(e.points) for e in result.evaluations)} load points, "
         f"{result.wall_s:.0f} s")
    if best is not None:
        point = result.best_point()
        emit(f"best under p99 <= {result.budget.p99_ms:g} ms: {best.candidate.label()} at {point.level:g} clients: "
             f"{point.requests_per_s} req/s, p99 {point.p99_ms} ms (published settings: {result.baseline.label()})")


def _plot(result, path: Path) -> None:
    from controlplane.perf.plot import plot_curves
    from controlplane.perf.tune.search import settled

    curves = {e.candidate.label(): [(p.requests_per_s, p.p99_ms) for p in e.points] for e in settled(result.evaluations)}
    point = result.best_point()
    plot_curves(curves, path, f"mlctl tune {result.model} v{result.version}", result.budget.p99_ms,
                None if point is None else (point.requests_per_s, point.p99_ms))


@revision_app.command("list")
def list_revisions(ctx: typer.Context, model: str, json: Json = False) -> None:
    """The model's config revisions, which one each channel holds, and their moves."""
    from controlplane.cli.lifecycle import lifecycle
    from controlplane.release.config_switch import revisions_of

    state = revisions_of(lifecycle(ctx), model)
    if json:
        import json as json_module

        emit_json(json_module.loads(state.to_json()))
        return
    emit(table(["revision", "settings", "measured on", "created", "by"],
               [[0, "as published", "-", "-", "-"]] + [[r.revision, _settings(r.settings), f"v{r.measured_on_version}", r.created_at, r.created_by]
                                                       for r in state.revisions]))
    emit("channels: " + (", ".join(f"{c}: revision {r}" for c, r in sorted(state.channels.items())) or "all on revision 0"))


def _settings(settings: dict) -> str:
    from controlplane.perf.tune.space import Candidate

    return Candidate.from_dict(settings).label()


@revision_app.command("rollback")
@action("config-revision rollback")
def rollback_revision(
    ctx: typer.Context,
    model: str,
    channel: Annotated[str, typer.Option(help="Channel whose config revision to roll back.")] = "production",
    to_revision: Annotated[int | None, typer.Option("--to-revision", help="Revision [default: the one held before; 0 is as published].")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit history.")] = "",
    json: Json = False,
) -> None:
    """Move a channel back to the config revision it held before (its version stays), with no failed requests."""
    from dataclasses import asdict

    from controlplane.cli.lifecycle import lifecycle
    from controlplane.release.config_switch import rollback_revision as run_rollback

    switch = run_rollback(lifecycle(ctx), model, channel, to_revision, reason)
    if json:
        emit_json(asdict(switch))
    else:
        emit(f"{model}: channel {channel} config revision {switch.from_revision} -> {switch.to_revision} ({switch.outcome}, "
             f"version {switch.version})")
