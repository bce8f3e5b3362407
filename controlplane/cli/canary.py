"""`mlctl canary start | status | promote | abort | run`."""

from __future__ import annotations

from typing import Annotated

import typer

from controlplane.cli.events import action
from controlplane.cli.render import emit, emit_json, note
from controlplane.defaults import CANARY_MIN_REQUESTS, CANARY_P99_RATIO, CANARY_P99_SLACK_MS, MIN_LABELS

app = typer.Typer(help="A canary: part of a channel's traffic to a new version, judged and decided automatically.", no_args_is_help=True)
Log = Annotated[str | None, typer.Option("--log", envvar="MLCTL_PREDICTION_LOG", help="The gateway's prediction log (evidence for each step).")]
Channel = Annotated[str, typer.Option(help="The channel whose traffic is split.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def canaries(ctx: typer.Context, log: str | None = None):
    from controlplane.cli.lifecycle import lifecycle
    from controlplane.release.canary import Canaries
    from controlplane.store import open_store

    return Canaries(lifecycle(ctx), open_store(log) if log else None, progress=note)


def _show(state, json: bool) -> None:
    if json:
        import json as jsonlib

        emit_json(jsonlib.loads(state.to_json()))
        return
    status = "running, holding at its last step" if state.holding else state.status
    unlabelled = ", may promote without labels (--allow-unlabelled)" if state.allow_unlabelled else ""
    if state.policy.estimate_missing_labels:
        unlabelled += ", short of labels judges the estimated accuracy (--estimate-missing-labels)"
    emit(f"{state.model}: canary v{state.canary} against stable v{state.stable} on {state.channel}: {status}, "
         f"weight {state.weight}% (step {state.step_index + 1} of {len(state.steps)}: {list(state.steps)}){unlabelled}")
    for decision in state.decisions[-5:]:
        emit(f"  {decision['time']} {decision['action']}: {decision['detail']}")


def _judged(state, json: bool) -> None:
    """Show a state a command judged; an aborted canary then fails the command (exit 6, the reason on stderr)."""
    from controlplane.release.canary.manager import aborted

    _show(state, json)
    if state.status == "aborted":
        raise aborted(state)


@app.command()
@action("canary.start", channel="channel")
def start(
    ctx: typer.Context,
    model: str,
    version: int,
    weight: Annotated[float, typer.Option(help="Percent of traffic to the canary at the first step.")] = 10.0,
    steps: Annotated[str | None, typer.Option(help="Rising weights, e.g. 10,25,50,100 [default: just --weight].")] = None,
    interval: Annotated[str | None, typer.Option(help="Judge and step every so often (e.g. 2m); without it, step by hand.")] = None,
    channel: Channel = "production",
    shadow: Annotated[bool, typer.Option(help="Mirror requests to the canary; answer from stable only.")] = False,
    sticky: Annotated[bool, typer.Option(help="Route by a hash of the X-Client-Key header.")] = False,
    min_requests: Annotated[int, typer.Option(help="Requests per arm and step before judging.")] = CANARY_MIN_REQUESTS,
    min_labels: Annotated[int, typer.Option(help="Labels per arm, over the whole canary, for the accuracy check.")] = MIN_LABELS,
    p99_ratio: Annotated[float, typer.Option(
        help="Latency check: the canary's p99 above stable's p99 x this (plus --p99-slack-ms) is a breach.")] = CANARY_P99_RATIO,
    p99_slack_ms: Annotated[float, typer.Option(help="Latency check: milliseconds allowed on top of stable's p99 x --p99-ratio.")] = CANARY_P99_SLACK_MS,
    allow_unlabelled: Annotated[bool, typer.Option(
        "--allow-unlabelled", help="Let the last step promote automatically even when the accuracy check is NOT MADE (too few labels).")] = False,
    estimate_missing_labels: Annotated[bool, typer.Option(
        "--estimate-missing-labels", help="With too few labels, judge accuracy on each arm's estimate from its logged scores "
                                          "(calibrated on its reference; reported as estimated, with its band).")] = False,
    max_seconds: Annotated[float, typer.Option(help="With --interval: give up waiting after this long (exit 6).")] = 3600.0,
    log: Log = None,
    json: Json = False,
) -> None:
    """Load VERSION as `<model>.canary` next to the stable version and send --weight percent of traffic to it."""
    from controlplane.observe.metrics.definitions import parse_window
    from controlplane.release.canary import CanaryPolicy, check_weight, parse_steps

    check_weight(weight)
    plan = parse_steps(steps, weight)
    seconds = parse_window(interval) if interval else 0.0
    manager = canaries(ctx, log)
    policy = CanaryPolicy(min_requests=min_requests, min_labels=min_labels, estimate_missing_labels=estimate_missing_labels,
                          p99_ratio=p99_ratio, p99_slack_ms=p99_slack_ms)
    state = manager.start(model, version, channel, plan, seconds, policy, shadow, sticky, allow_unlabelled)
    if interval:
        state = manager.run(model, max_seconds)
    _judged(state, json)


@app.command()
def status(ctx: typer.Context, model: str, json: Json = False) -> None:
    """The canary's weight, step and decisions."""
    _show(canaries(ctx).status(model), json)


@app.command()
@action("canary.step")
def step(ctx: typer.Context, model: str, log: Log = None, json: Json = False) -> None:
    """Judge the current step now: advance, promote after the last step, or abort on a breach."""
    _judged(canaries(ctx, log).step(model), json)


@app.command()
@action("canary.run")
def run(ctx: typer.Context, model: str, log: Log = None, max_seconds: Annotated[float, typer.Option()] = 3600.0, json: Json = False) -> None:
    """Resume judging a canary started with --interval (after a restart of mlctl); exit 6 if undecided in time."""
    _judged(canaries(ctx, log).run(model, max_seconds), json)


@app.command()
@action("canary.promote")
def promote(ctx: typer.Context, model: str, reason: Annotated[str, typer.Option()] = "promoted by hand", json: Json = False) -> None:
    """Promote the canary to its channel now."""
    _show(canaries(ctx).promote(model, reason), json)


@app.command()
@action("canary.abort")
def abort(ctx: typer.Context, model: str, reason: Annotated[str, typer.Option()] = "aborted by hand", json: Json = False) -> None:
    """Stop the canary: all traffic back to stable, the canary unloaded."""
    _show(canaries(ctx).abort(model, reason), json)
