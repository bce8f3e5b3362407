"""`mlctl monitor report | check`: quality and drift from the prediction log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from controlplane.cli.render import emit, emit_json, table

app = typer.Typer(help="Quality and drift of served versions, from logged predictions and feedback.", no_args_is_help=True)
Log = Annotated[str, typer.Option("--log", envvar="MLCTL_PREDICTION_LOG", help="Prediction log: a folder or s3://bucket/prefix.")]
Window = Annotated[str, typer.Option(help="How far back, e.g. 1h, 30m, 7d.")]


def _report(ctx: typer.Context, model: str, log: str, version: Optional[str], window: str) -> dict:
    from controlplane.feedback.predlog import read_tables
    from controlplane.observe.metrics.definitions import parse_window
    from controlplane.quality.monitor import MonitorOptions, build_report
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    seconds = parse_window(window)
    repo = Repository(open_store(ctx.obj.repository))
    references = {str(v): repo.reference(model, v) for v in repo.versions(model)}
    predictions, feedback = read_tables(open_store(log), model)
    return build_report(predictions, feedback, references, MonitorOptions(model=model, version=version, window_s=seconds))


@app.command()
def report(
    ctx: typer.Context,
    model: str,
    log: Log,
    version: Annotated[Optional[str], typer.Option("--version", "-v")] = None,
    window: Window = "1h",
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write an HTML report with plots.")] = None,
) -> None:
    """Accuracy and per-class P/R/F1, data/prediction/concept drift, feedback coverage and label delay."""
    result = _report(ctx, model, log, version, window)
    if html:
        from controlplane.quality.html import render

        html.write_text(render(result))
    if json:
        emit_json(result)
        return
    rows = []
    for v, body in result["versions"].items():
        quality = body.get("quality") or {}
        drifted = len((body.get("data_drift") or {}).get("drifted", []))
        rows.append([v, body["predictions"], body["labelled"], _pct(body["coverage"]), _num(quality.get("accuracy")),
                     _num(body["reference_accuracy"]), drifted, (body.get("prediction_drift") or {}).get("drifted"),
                     body["concept_drift"]["drifted"], _num(body["label_delay"]["median_s"])])
    emit(table(["version", "predictions", "labelled", "coverage", "accuracy", "reference", "drifted features",
                "prediction drift", "concept drift", "label delay s"], rows))


@app.command()
def check(
    ctx: typer.Context,
    model: str,
    log: Log,
    window: Window = "1h",
    min_accuracy: Annotated[Optional[float], typer.Option(help="Fail below this accuracy.")] = None,
    max_drifted_features: Annotated[Optional[int], typer.Option(help="Fail above this many drifted features.")] = 0,
    min_coverage: Annotated[Optional[float], typer.Option(help="Fail below this share of labelled predictions.")] = None,
) -> None:
    """Exit 6 when a threshold is breached (for CI and cron)."""
    from controlplane.errors import CheckFailedError
    from controlplane.quality.monitor import breaches

    found = breaches(_report(ctx, model, log, None, window), min_accuracy, max_drifted_features, min_coverage)
    if found:
        raise CheckFailedError(f"monitor check of {model!r} failed: " + "; ".join(found))
    emit(f"{model}: no threshold breached")


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command()
def export(
    ctx: typer.Context,
    model: str,
    log: Log,
    window: Window = "1h",
    port: Annotated[int, typer.Option(help="Serve /metrics on this port.")] = 9109,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    interval: Annotated[float, typer.Option(help="Recompute at most this often (seconds).")] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="Print the gauges once (Prometheus text format) and exit.")] = False,
) -> None:
    """Quality and drift as Prometheus gauges, for alert rules and dashboards."""
    from controlplane.quality.exporter import QualityCollector, render_text

    if once:
        emit(render_text(_report(ctx, model, log, None, window)).rstrip())
        return
    import time

    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(QualityCollector(lambda: _report(ctx, model, log, None, window), interval))
    start_http_server(port, addr=host, registry=registry)
    emit(f"serving quality gauges of {model!r} on http://{host}:{port}/metrics")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
