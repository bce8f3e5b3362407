"""`mlctl promote | rollback | status | history | reconcile | channel remove`: channels across replicas."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from controlplane.cli.events import action
from controlplane.cli.render import emit, emit_json, note, table

Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
NONE = "-"  # how a missing value (no version yet, no replicas) reads in a table

channel_app = typer.Typer(help="A model's channels: remove one (a mistyped or retired name).", no_args_is_help=True)


def _v(value) -> str:
    return NONE if value is None else str(value)


def lifecycle(ctx: typer.Context):
    from controlplane.release.lifecycle import Lifecycle
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.targets import load_targets

    settings = ctx.obj
    repo = Repository(open_store(settings.repository)).require()
    return Lifecycle(repo, load_targets(settings.targets_file), settings.control_key, progress=note)


def _report(report, json: bool) -> None:
    if json:
        emit_json(report.to_dict())
    elif report.outcome == "unchanged":
        emit(f"{report.model}: channel {report.channel} already at version {report.to_version}; nothing to do")
    else:
        per = ", ".join(f"{r['url']} {r['seconds']:.2f}s" for r in report.replicas) or "no replicas configured"
        emit(
            f"{report.action}: {report.model} {report.channel} {_v(report.from_version)} -> {report.to_version} "
            f"in {report.duration_s:.2f} s ({per})"
        )


@action("promote", channel="to")
def promote(
    ctx: typer.Context,
    model: str,
    version: int,
    to: Annotated[str, typer.Option("--to", help="Channel, e.g. staging or production.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit history.")] = "",
    gate: Annotated[bool, typer.Option("--gate", help="Refuse unless the promotion gates pass first.")] = False,
    gate_url: Annotated[Optional[str], typer.Option(help="Triton serving the candidate, for --gate [default: the channel's first replica].")] = None,
    gate_thresholds: Annotated[Optional[str], typer.Option(envvar="MLCTL_GATE_THRESHOLDS", help="Thresholds file for --gate.")] = None,
    create_channel: Annotated[bool, typer.Option("--create-channel", help="Allow a channel that the targets do not configure and the model does not have yet.")] = False,
    json: Json = False,
) -> None:
    """Point a channel at a version and switch its replicas one at a time, with no failed requests."""
    lc = lifecycle(ctx)
    lc.check_channel_known(model, to, create_channel)  # a mistyped channel is refused before any gate runs
    if gate:
        from controlplane.cli.gate import run_gate, show
        from controlplane.errors import CheckFailedError

        verdict = run_gate(ctx, model, version, to, gate_url, gate_thresholds, None)
        if not verdict.passed:
            show(verdict, json=False)
            failed = ", ".join(g.gate for g in verdict.gates if not g.passed)
            raise CheckFailedError(f"promotion of {model} v{version} to {to} refused: failed gate(s) {failed}; nothing changed")
    _report(lc.promote(model, version, to, reason, create_channel), json)


@action("rollback", version="to")
def rollback(
    ctx: typer.Context,
    model: str,
    channel: Annotated[str, typer.Option(help="Channel to roll back.")] = "production",
    to: Annotated[Optional[int], typer.Option("--to", help="Version [default: the one the channel held before].")] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit history.")] = "",
    json: Json = False,
) -> None:
    """Move a channel back to the version it held before (or to --to VERSION)."""
    _report(lifecycle(ctx).rollback(model, channel, to, reason), json)


def status(ctx: typer.Context, model: str, json: Json = False) -> None:
    """Each channel's version, and what each of its replicas actually serves."""
    info = lifecycle(ctx).status(model)
    if json:
        emit_json(info)
    else:
        rows = []
        for channel, body in info["channels"].items():
            for replica in body["replicas"] or [{"url": "(no replicas)", "served": [], "in_sync": None, "reachable": None}]:
                rows.append([channel, _v(body["version"]), replica["url"], ",".join(map(str, replica["served"])) or NONE,
                             _replica_state(replica)])
        emit(f"{model}: versions {info['versions']} in {info['repository']}")
        emit(table(["channel", "version", "replica", "serving", "state"], rows))
        if info["pending"]:
            p = info["pending"]
            emit(f"pending: {p['action']} of {p['channel']} to {p['to_version']} since {p['started_at']} ({p['user']}@{p['host']})")
        for problem in info["problems"]:
            emit(f"problem: {problem}")
        for replica in (r for b in info["channels"].values() for r in b["replicas"]):
            if replica.get("error"):
                note(f"{replica['url']}: {replica['error']}")
    drift = [r for b in info["channels"].values() for r in b["replicas"] if not r["in_sync"]]
    if drift or info["pending"] or info["problems"]:
        raise typer.Exit(1)


def _replica_state(replica: dict) -> str:
    if replica.get("in_sync") is None:
        return NONE
    if replica.get("reachable") is False:
        return "unreachable"
    if replica.get("key") == "missing":
        return "key refused: none given"
    if replica.get("key") == "wrong":
        return "key refused: wrong key"
    return "in sync" if replica["in_sync"] else "DRIFT"


def history(ctx: typer.Context, model: str, channel: Annotated[Optional[str], typer.Option(help="Only this channel.")] = None, json: Json = False) -> None:
    """The append-only audit of every promote and rollback of a model."""
    entries = [e for e in lifecycle(ctx).history(model) if channel in (None, e.channel)]
    if json:
        from dataclasses import asdict

        emit_json({"model": model, "history": [asdict(e) for e in entries]})
        return
    rows = [
        [e.seq, e.time, f"{e.user}@{e.host}", e.action, e.channel, f"{_v(e.from_version)} -> {_v(e.to_version)}", e.outcome,
         e.reason or NONE, e.detail[:80] or NONE]
        for e in entries
    ]
    emit(table(["#", "time", "who", "action", "channel", "from -> to", "outcome", "reason", "detail"], rows))


@action("reconcile")
def reconcile(
    ctx: typer.Context,
    model: Annotated[Optional[list[str]], typer.Argument(help="Models [default: every model with channels].")] = None,
    force: Annotated[bool, typer.Option(help="Close a pending operation even if it may still run.")] = False,
    json: Json = False,
) -> None:
    """Converge every replica and channel config on the desired state; report what differed."""
    result = lifecycle(ctx).reconcile(model or None, force)
    if json:
        emit_json(result)
    else:
        for change in result["changes"]:
            emit("changed: " + ", ".join(f"{k}={v}" for k, v in change.items()))
        if not result["changes"]:
            emit("everything already matched the desired state")
        for error in result["errors"]:
            note(f"error: {error}")
    if result["errors"]:
        raise typer.Exit(1)


@channel_app.command("remove")
@action("channel.remove")
def remove_channel(
    ctx: typer.Context,
    model: str,
    channel: str,
    reason: Annotated[str, typer.Option(help="Why, for the audit history.")] = "",
    json: Json = False,
) -> None:
    """Remove a channel from a model (its state and configs/CHANNEL.pbtxt); recorded in the history."""
    entry = lifecycle(ctx).remove_channel(model, channel, reason)
    if json:
        from dataclasses import asdict

        emit_json(asdict(entry))
    else:
        emit(f"{model}: channel {channel} removed (it held version {_v(entry.from_version)})")
