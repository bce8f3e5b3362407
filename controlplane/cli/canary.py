"""`mlctl canary start | status | promote | abort | run`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from controlplane.cli.events import action
from controlplane.cli.render import emit, emit_json, note

app = typer.Typer(help="A canary: part of a channel's traffic to a new version, judged and decided automatically.", no_args_is_help=True)
Log = Annotated[Optional[str], typer.Option("--log", envvar="MLCTL_PREDICTION_LOG", help="The gateway's prediction log (evidence for each step).")]
Channel = Annotated[str, typer.Option(help="The channel whose traffic is split.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def canaries(ctx: typer.Context, log: Optional[str] = None):
    from controlplane.cli.lifecycle import lifecycle
    from controlplane.release.canary import Canaries
    from controlplane.store import open_store

    return Canaries(lifecycle(ctx), open_store(log) if log else None, progress=note)


def _show(state, json: bool) -> None:
    if json:
        import json as jsonlib

        emit_json(jsonlib.loads(state.to_json()))
        return
    emit(f"{state.model}: canary v{state.canary} against stable v{state.stable} on {state.channel}: {state.status}, "
         f"weight {state.weight}% (step {state.step_index + 1} of {len(state.steps)}: {list(state.steps)})")
    for decision in state.decisions[-5:]:
        emit(f"  {decision['time']} {decision['action']}: {decision['detail']}")


@app.command()
@action("canary.start", channel="channel")
def start(
    ctx: typer.Context,
    model: str,
    version: int,
    weight: Annotated[float, typer.Option(help="Percent of traffic to the canary at the first step.")] = 10.0,
    steps: Annotated[Optional[str], typer.Option(help="Rising weights, e.g. 10,25,50,100 [default: just --weight].")] = None,
    interval: Annotated[Optional[str], typer.Option(help="Judge and step every so often (e.g. 2m); without it, step by hand.")] = None,
    channel: Channel = "production",
    shadow: Annotated[bool, typer.Option(help="Mirror requests to the canary; answer from stable only.")] = False,
    sticky: Annotated[bool, typer.Option(help="Route by a hash of the X-Client-Key header.")] = False,
    min_requests: Annotated[int, typer.Option(help="Requests per arm and step before judging.")] = 100,
    max_seconds: Annotated[float, typer.Option(help="With --interval: give up waiting after this long.")] = 3600.0,
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
    state = manager.start(model, version, channel, plan, seconds, CanaryPolicy(min_requests=min_requests), shadow, sticky)
    if interval:
        state = manager.run(model, max_seconds)
    _show(state, json)
    if state.status == "aborted":
        raise typer.Exit(6)


@app.command()
def status(ctx: typer.Context, model: str, json: Json = False) -> None:
    """The canary's weight, step and decisions."""
    _show(canaries(ctx).status(model), json)


@app.command()
@action("canary.step")
def step(ctx: typer.Context, model: str, log: Log = None, json: Json = False) -> None:
    """Judge the current step now: advance, promote after the last step, or abort on a breach."""
    state = canaries(ctx, log).step(model)
    _show(state, json)
    if state.status == "aborted":
        raise typer.Exit(6)


@app.command()
@action("canary.run")
def run(ctx: typer.Context, model: str, log: Log = None, max_seconds: Annotated[float, typer.Option()] = 3600.0, json: Json = False) -> None:
    """Resume judging a running canary every interval (after a restart of mlctl)."""
    state = canaries(ctx, log).run(model, max_seconds)
    _show(state, json)
    if state.status == "aborted":
        raise typer.Exit(6)


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
