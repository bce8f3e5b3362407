"""`mlctl monitor report | check`: quality and drift from the prediction log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controlplane.cli.render import emit, emit_json, note, table

app = typer.Typer(help="Quality and drift of served versions, from logged predictions and feedback.", no_args_is_help=True)
Log = Annotated[str, typer.Option("--log", envvar="MLCTL_PREDICTION_LOG", help="Prediction log: a folder or s3://bucket/prefix.")]
Window = Annotated[str, typer.Option(help="How far back, e.g. 1h, 30m, 7d.")]


AllowEmpty = Annotated[bool, typer.Option("--allow-empty", help="No predictions in the window is an answer, not a failure.")]
EmbeddingOutput = Annotated[str | None, typer.Option(
    "--embedding-output", help="Watch drift of this output (one after the first, e.g. an embedding) instead of the first "
                               "output's vectors; the reference needs its values as embedding_<name>.")]


def _report(ctx: typer.Context, model: str, log: str, version: str | None, window: str, segment_feature: str | None = None,
            embedding_output: str | None = None) -> dict:
    from controlplane.observe.metrics.definitions import parse_window
    from controlplane.quality.monitor import MonitorOptions, load_report
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    options = MonitorOptions(model=model, version=version, window_s=parse_window(window), segment_feature=segment_feature,
                             embedding_output=embedding_output)
    return load_report(Repository(open_store(ctx.obj.repository)), open_store(log), options)


@app.command()
def report(
    ctx: typer.Context,
    model: str,
    log: Log,
    version: Annotated[str | None, typer.Option("--version", "-v")] = None,
    window: Window = "1h",
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML report with plots.")] = None,
    allow_empty: AllowEmpty = False,
    segment_feature: Annotated[str | None, typer.Option(
        "--segment-feature", help="Also rank the worst slices by this input (f0, f1, ...).")] = None,
    embedding_output: EmbeddingOutput = None,
) -> None:
    """Accuracy (realised and estimated without labels), per-class P/R/F1, data quality, per-feature,
    multivariate, output, prediction and concept drift, worst slices, feedback coverage and label delay.
    Exit 3 when the window holds no predictions (unless --allow-empty)."""
    from controlplane.errors import NotFoundError
    from controlplane.quality.monitor import no_predictions

    result = _report(ctx, model, log, version, window, segment_feature, embedding_output)
    empty = no_predictions(result)
    if empty and not allow_empty:
        raise NotFoundError(empty, hint="check the model, --version, --window and --log (is the gateway logging there?); "
                                        "--allow-empty prints the empty report")
    if html:
        from controlplane.quality.html import render

        html.write_text(render(result))
    if json:
        emit_json(result)
        return
    rows = []
    for v, body in result["versions"].items():
        quality = body.get("quality") or {}
        drift = body.get("data_drift") or {}
        estimated = body.get("estimated") or {}
        flagged = (body.get("data_quality") or {}).get("flagged")
        rows.append([v, body["predictions"], body["labelled"], _pct(body["coverage"]), _num(quality.get("accuracy")),
                     _num(estimated.get("accuracy")), _num(body["reference_accuracy"]),
                     "-" if flagged is None or body["data_quality"]["not_made"] else len(flagged),
                     _made_flag(body.get("multivariate_drift")),
                     "-" if not drift or drift["not_made"] else len(drift["drifted"]),
                     sum(drift.get("non_finite", {}).values()), _flag((body.get("prediction_drift") or {}).get("drifted")),
                     body["concept_drift"]["status"], _num(body["label_delay"]["median_s"])])
    emit(table(["version", "predictions", "labelled", "coverage", "accuracy", "estimated", "reference", "quality flags",
                "multivariate drift", "drifted features",
                "non-finite values", "prediction drift", "concept drift", "label delay s"], rows))
    if empty:
        note(f"{empty} (allowed by --allow-empty)")


@app.command()
def check(
    ctx: typer.Context,
    model: str,
    log: Log,
    version: Annotated[str | None, typer.Option("--version", "-v", help="One version [default: every version with predictions].")] = None,
    window: Window = "1h",
    min_accuracy: Annotated[float | None, typer.Option(help="Fail below this accuracy.")] = None,
    max_drifted_features: Annotated[int | None, typer.Option(help="Fail above this many drifted features.")] = 0,
    min_coverage: Annotated[float | None, typer.Option(help="Fail below this share of labelled predictions.")] = None,
    allow_empty: AllowEmpty = False,
    allow_missing_labels: Annotated[bool, typer.Option(
        "--allow-missing-labels", help="Accuracy and concept drift without enough labels are reported, not failed.")] = False,
    allow_missing_reference: Annotated[bool, typer.Option(
        "--allow-missing-reference", help="Drift checks of a version without a reference sample are reported, not failed.")] = False,
    max_quality_issues: Annotated[int | None, typer.Option(help="Fail above this many features flagged by data quality.")] = 0,
    multivariate: Annotated[bool, typer.Option(help="Check multivariate drift (PCA reconstruction, domain classifier).")] = True,
    max_estimated_drop: Annotated[float | None, typer.Option(
        help="Fail when the accuracy estimated without labels (CBPE) is this far below the reference's.")] = None,
    estimate_missing_labels: Annotated[bool, typer.Option(
        "--estimate-missing-labels", help="Judge --min-accuracy on the estimated accuracy while labels are too few (said so).")] = False,
    output_drift: Annotated[bool, typer.Option("--output-drift", help="Also check drift of the output vectors.")] = False,
    embedding_output: EmbeddingOutput = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Exit 6 when a threshold is breached or a check could not be made (no data, too few labels, no
    reference), unless that gap is allowed. For CI and cron."""
    from controlplane.errors import CheckFailedError
    from controlplane.quality.checks import NOT_MADE, Allowed, Thresholds, evaluate

    thresholds = Thresholds(min_accuracy, max_drifted_features, min_coverage, max_quality_issues=max_quality_issues,
                            multivariate=multivariate, max_estimated_drop=max_estimated_drop,
                            estimate_missing_labels=estimate_missing_labels, output_drift=output_drift or bool(embedding_output))
    allowed = Allowed(allow_empty, allow_missing_labels, allow_missing_reference)
    result = evaluate(_report(ctx, model, log, version, window, embedding_output=embedding_output), thresholds, allowed)
    if json:
        emit_json(result.to_dict())
    else:
        emit(table(["version", "check", "status", "detail"],
                   [[o.version or "-", o.check, o.status + (" (allowed)" if o.allowed else ""), o.detail] for o in result.outcomes]))
    if result.ok:
        return
    gaps = sorted({o.gap for o in result.failed if o.status == NOT_MADE})
    flags = {"data": "--allow-empty", "labels": "--allow-missing-labels", "reference": "--allow-missing-reference"}
    hint = ("a check that could not be made fails: send traffic or labels, publish a reference, or accept the gap with "
            + " / ".join(flags[g] for g in gaps)) if gaps else None
    raise CheckFailedError(f"monitor check of {model!r} failed: " + "; ".join(o.describe() for o in result.failed), hint=hint)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _flag(value) -> str:
    return "-" if value is None else str(value)


def _made_flag(section: dict | None) -> str:
    return "-" if not section or section.get("not_made") else str(section["drifted"])


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
