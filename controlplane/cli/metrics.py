"""`mlctl metrics MODEL`, `metrics compare MODEL A B`, `metrics watch MODEL`."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from typer.core import TyperGroup

from controlplane.cli.render import emit, emit_json, note, table


class _ModelFirst(TyperGroup):
    """`mlctl metrics MODEL ...` means `mlctl metrics show MODEL ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_ModelFirst, help="Serving metrics per version, from Prometheus or from Triton directly.", no_args_is_help=True)

Window = Annotated[str, typer.Option(help="Window, e.g. 30s, 5m, 1h (direct: how long to wait between scrapes).")]
Source = Annotated[str, typer.Option(help="prometheus, or direct (scrape Triton's /metrics twice).")]
PromUrl = Annotated[str, typer.Option(envvar="MLCTL_PROMETHEUS_URL", help="Prometheus base URL.")]
MetricsUrl = Annotated[list[str] | None, typer.Option("--metrics-url", help="Triton /metrics URL for --source direct [default: the managed servers'].")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _source(ctx: typer.Context, source: str, prometheus_url: str, metrics_url: list[str] | None):
    from controlplane.errors import UsageError
    from controlplane.observe.metrics.report import DirectSource, PrometheusSource
    from controlplane.triton.server.local import LocalServers

    if source == "prometheus":
        return PrometheusSource(prometheus_url)
    if source == "direct":
        if not metrics_url:
            servers = LocalServers(ctx.obj.home)
            metrics_url = [s.metrics_url for n in servers.files.names() if (s := servers.running(n))]
        return DirectSource(list(metrics_url))
    raise UsageError(f"source {source!r} must be 'prometheus' or 'direct'")


def _fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.4f}"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "count":
        return f"{value:.0f}"
    return f"{value:.3f}"


def _rows(report, columns) -> list[list[str]]:
    from controlplane.observe.metrics.definitions import FIGURES

    rows = [[f.title, f.unit, *(_fmt(c.figures.get(f.key), f.unit) for c in columns)] for f in FIGURES if f.per_version]
    reasons = sorted({r for c in columns for r in c.failures_by_reason})
    rows += [[f"failures: {r}", "count", *(_fmt(c.failures_by_reason.get(r, 0), "count") for c in columns)] for r in reasons]
    rows += [[f.title + " (server)", f.unit, *(_fmt(report.server.get(f.key), f.unit) for _ in columns)] for f in FIGURES if not f.per_version]
    return rows


def _progress(source: str):
    """A progress callback for the direct source's wait: one line on stderr, redrawn each second on a TTY,
    repeated every 30 s otherwise (CI logs)."""
    if source != "direct":
        return None
    tty = sys.stderr.isatty()
    last = {"shown": -1.0}

    def show(waited: float, total: float) -> None:
        if waited == 0:
            note(f"scraped; waiting {total:.0f} s (--window) for the second scrape, Ctrl-C to stop")
        elif tty:
            sys.stderr.write(f"\r  {waited:.0f}/{total:.0f} s" + ("\n" if waited >= total else ""))
            sys.stderr.flush()
        elif waited < total and waited - last["shown"] >= 30:
            note(f"  {waited:.0f}/{total:.0f} s")
        else:
            return
        last["shown"] = waited

    return show


def _report(src, source: str, model: str, version: str | None, window: str):
    return src.report(model, version, window, progress=_progress(source)) if source == "direct" else src.report(model, version, window)


def _print(report, json: bool) -> None:
    for column in report.versions:
        if column.idle:
            note(f"version {column.version} of {report.model} was loaded but received no request in the last {report.window}")
    if json:
        emit_json(report.to_dict())
        return
    emit(f"{report.model} over {report.window}, source: {report.source}")
    emit(table(["figure", "unit", *(f"version {c.version}" for c in report.versions)], _rows(report, report.versions)))


@app.command()
def show(
    ctx: typer.Context,
    model: str,
    version: Annotated[str | None, typer.Option("--version", "-v", help="One version [default: all with metrics].")] = None,
    window: Window = "5m",
    source: Source = "prometheus",
    prometheus_url: PromUrl = "http://127.0.0.1:9090",
    metrics_url: MetricsUrl = None,
    json: Json = False,
) -> None:
    """Throughput, errors, latency, queue/compute time, batching, GPU and CPU per version."""
    _print(_report(_source(ctx, source, prometheus_url, metrics_url), source, model, version, window), json)


@app.command()
def compare(
    ctx: typer.Context,
    model: str,
    a: str,
    b: str,
    window: Window = "5m",
    source: Source = "prometheus",
    prometheus_url: PromUrl = "http://127.0.0.1:9090",
    metrics_url: MetricsUrl = None,
    json: Json = False,
) -> None:
    """Two versions side by side."""
    from dataclasses import replace

    from controlplane.errors import NotFoundError

    src = _source(ctx, source, prometheus_url, metrics_url)
    if source == "direct":
        report = _report(src, source, model, None, window)
    else:
        first, second = src.report(model, a, window), src.report(model, b, window)
        report = replace(first, versions=first.versions + second.versions)
    columns = {c.version: c for c in report.versions}
    missing = [v for v in (a, b) if v not in columns]
    if missing:
        raise NotFoundError(f"no metrics for version(s) {', '.join(missing)} of {model!r}")
    _print(replace(report, versions=[columns[a], columns[b]]), json)


@app.command()
def watch(
    ctx: typer.Context,
    model: str,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    window: Window = "1m",
    count: Annotated[int, typer.Option(help="Stop after this many refreshes (0: until Ctrl-C).")] = 0,
    prometheus_url: PromUrl = "http://127.0.0.1:9090",
) -> None:
    """A live table from Prometheus, refreshed until Ctrl-C."""
    src = _source(ctx, "prometheus", prometheus_url, None)
    shown = 0
    try:
        while count == 0 or shown < count:
            report = src.report(model, None, window)
            if sys.stdout.isatty():
                emit("\033[2J\033[H")
            _print(report, json=False)
            shown += 1
            if count == 0 or shown < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass


@app.command()
def security(
    window: Annotated[str, typer.Option(help="Window for --source prometheus, e.g. 5m, 1h, 1d.")] = "1h",
    source: Annotated[str, typer.Option(help="prometheus, or direct (scrape the gateways' /metrics once).")] = "prometheus",
    prometheus_url: PromUrl = "http://127.0.0.1:9090",
    gateway_url: Annotated[list[str] | None, typer.Option("--gateway-url", help="Gateway /metrics URL for --source direct (repeatable).")] = None,
    json: Json = False,
) -> None:
    """Security counters: auth failures, refused control calls, rate-limited and oversized requests, signature
    refusals and tampering (direct: totals since each gateway started)."""
    from controlplane.errors import UsageError
    from controlplane.observe.metrics import security as s
    from controlplane.observe.metrics.report import PrometheusSource

    if source == "prometheus":
        figures, over = s.from_prometheus(PrometheusSource(prometheus_url), window), f"the last {window}"
    elif source == "direct":
        if not gateway_url:
            raise UsageError("--source direct needs --gateway-url (e.g. http://127.0.0.1:8080/metrics)")
        figures, over = s.from_gateways(list(gateway_url)), "since each gateway started"
    else:
        raise UsageError(f"source {source!r} must be 'prometheus' or 'direct'")
    if json:
        emit_json({"source": source, "over": over, "figures": figures})
        return
    titles = {f.key: (f.title, f.label) for f in s.FIGURES}
    rows = [[titles[key][0], f"{titles[key][1]}={label}" if label else "-", f"{value:.0f}"]
            for key, values in figures.items() for label, value in (sorted(values.items()) or [("", 0.0)])]
    emit(f"security counters over {over}, source: {source}")
    emit(table(["figure", "by", "count"], rows))
