"""`mlctl gate`: promotion gates against a live Triton serving the candidate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from controlplane.cli.render import emit, emit_json, note, table

GateUrl = Annotated[Optional[str], typer.Option("--url", help="Triton gRPC host:port serving the candidate [default: the channel's first replica].")]
Thresholds = Annotated[Optional[str], typer.Option("--thresholds", envvar="MLCTL_GATE_THRESHOLDS", help="TOML file with a [gate] table.")]
Holdout = Annotated[Optional[Path], typer.Option("--holdout", help="Held-out set (.npz: features, labels) [default: the version's reference].")]


def run_gate(ctx: typer.Context, model: str, version: int, channel: str, url: Optional[str], thresholds: Optional[str], holdout: Optional[Path],
             estimate_missing_labels: bool = False):
    from controlplane.errors import UsageError
    from controlplane.release.gate import GateThresholds, evaluate
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.targets import load_targets

    settings = ctx.obj
    checked = GateThresholds.load(thresholds)  # a bad file is refused before any load runs
    if url is None:
        replicas = load_targets(settings.targets_file).replicas(channel)
        if not replicas:
            raise UsageError(f"no Triton to gate against: channel {channel!r} has no replicas", hint="pass --url host:port")
        url = replicas[0]
    repo = Repository(open_store(settings.repository)).require()
    return evaluate(repo, model, version, channel, url, checked, holdout, progress=note, estimate_missing_labels=estimate_missing_labels)


def show(verdict, json: bool) -> None:
    if json:
        emit_json(verdict.to_dict())
        return
    rows = [[g.gate, "pass" if g.passed else "FAIL", "-" if g.value is None else f"{'~' if g.basis == 'estimated' else ''}{g.value:.4g}",
             "-" if g.threshold is None else f"{g.threshold:.4g}", g.detail] for g in verdict.gates]
    emit(table(["gate", "result", "value", "threshold", "detail"], rows))


def gate(
    ctx: typer.Context,
    model: str,
    version: int,
    channel: Annotated[str, typer.Option(help="The channel the candidate is headed for.")] = "staging",
    url: GateUrl = None,
    thresholds: Thresholds = None,
    holdout: Holdout = None,
    estimate_missing_labels: Annotated[bool, typer.Option(
        "--estimate-missing-labels", help="With no labelled held-out set, judge the accuracy estimated from the served scores on "
                                          "the reference features (calibrated on production's reference) against the floor.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Integrity, held-out accuracy from served answers, p99 under load, error rate; exit 6 when a gate fails."""
    from controlplane.errors import CheckFailedError

    verdict = run_gate(ctx, model, version, channel, url, thresholds, holdout, estimate_missing_labels)
    show(verdict, json)
    if not verdict.passed:
        failed = ", ".join(g.gate for g in verdict.gates if not g.passed)
        raise CheckFailedError(f"{model} v{version} failed the gate(s): {failed}")
