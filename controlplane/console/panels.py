"""The slower panels of a model page, loaded after it: serving figures per version from Prometheus, and the
latest quality report from the prediction log. Each says plainly when its source is not configured or not
reachable, never shows an absent figure as a zero."""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.console.settings import ConsoleSettings
from controlplane.errors import MlctlError, NotFoundError

# the figures a model page shows per version, in this order (definitions.py holds their PromQL)
SERVING_FIGURES = ("requests_per_s", "error_rate", "failures", "p50_request_ms", "p99_request_ms", "p50_compute_ms",
                   "p99_compute_ms", "avg_queue_ms")


@dataclass
class Panel:
    """A panel's content, or why there is none: `note` for a source that is not configured or holds no data,
    `error` (with `hint`) for one that failed."""

    rows: list[dict] = field(default_factory=list)
    note: str = ""
    error: str = ""
    hint: str = ""
    source: str = ""


def _failed(exc: MlctlError, source: str) -> Panel:
    if isinstance(exc, NotFoundError):
        return Panel(note=exc.message, hint=exc.hint or "", source=source)
    return Panel(error=exc.message, hint=exc.hint or "", source=source)


def serving(settings: ConsoleSettings, model: str, versions: list[str] | None = None) -> Panel:
    """Per version: throughput, errors and latency over the console's window."""
    from controlplane.observe.metrics.report import PrometheusSource

    if not settings.prometheus_url:
        return Panel(note="Prometheus isn't configured, so there are no serving figures here",
                     hint="restart the console with --prometheus-url URL (or MLCTL_PROMETHEUS_URL); "
                          "'mlctl metrics MODEL --source direct' reads Triton without it")
    source = PrometheusSource(settings.prometheus_url)
    label = f"Prometheus at {settings.prometheus_url}, last {settings.window}"
    rows = []
    try:
        for version in versions or [None]:
            report = source.report(model, version, settings.window)
            for figures in report.versions:
                rows.append({"version": figures.version, "idle": figures.idle, "failures_by_reason": figures.failures_by_reason,
                             **{key: figures.figures.get(key) for key in SERVING_FIGURES}})
    except MlctlError as exc:
        return _failed(exc, label)
    return Panel(rows=rows, source=label, note="" if rows else "no version has metrics in the window")


def quality(settings: ConsoleSettings, model: str) -> Panel:
    """The monitor report's summary per version (accuracy, drift, coverage) over the console's window."""
    from controlplane.observe.metrics.definitions import parse_window
    from controlplane.quality.monitor import MonitorOptions, load_report, no_predictions
    from controlplane.store import open_store

    if not settings.log:
        return Panel(note="no prediction log is configured, so there is no quality report here",
                     hint="restart the console with --log (or MLCTL_PREDICTION_LOG) naming the gateway's log")
    label = f"prediction log {settings.log}, last {settings.window}"
    try:
        options = MonitorOptions(model=model, window_s=parse_window(settings.window))
        report = load_report(settings.open_repository(), open_store(settings.log), options)
    except MlctlError as exc:
        return _failed(exc, label)
    empty = no_predictions(report)
    if empty:
        return Panel(note=empty, source=label)
    rows = []
    for version, body in report["versions"].items():
        drift = body.get("data_drift") or {}
        rows.append({
            "version": version,
            "predictions": body["predictions"],
            "labelled": body["labelled"],
            "coverage": body["coverage"],
            "accuracy": (body.get("quality") or {}).get("accuracy"),
            "reference_accuracy": body.get("reference_accuracy"),
            "estimated_accuracy": (body.get("estimated") or {}).get("accuracy"),
            "estimated_band": (body.get("estimated") or {}).get("band"),
            "estimated_not_made": (body.get("estimated") or {}).get("not_made") or "no scores to calibrate on",
            "drifted_features": None if not drift or drift.get("not_made") else len(drift.get("drifted", [])),
            "data_drift_not_made": drift.get("not_made") if drift else "no reference sample",
            "prediction_drift": (body.get("prediction_drift") or {}).get("drifted"),
            "concept_drift": body["concept_drift"]["status"],
        })
    return Panel(rows=rows, source=label)
