"""`mlctl perf`: measure a served model like perf_analyzer: a closed-loop concurrency sweep or open-loop rates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from controlplane.cli.render import emit, emit_json, note, table


def parse_levels(text: str, what: str) -> list[float]:
    from controlplane.errors import UsageError

    try:
        levels = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        levels = []
    if not levels or any(v <= 0 for v in levels):
        raise UsageError(f"{what} {text!r} must be positive numbers separated by commas, e.g. 1,4,16")
    return levels


def perf(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="Version [default: what Triton serves].")] = None,
    url: Annotated[str | None, typer.Option(envvar="MLCTL_TRITON_URL", help="Triton gRPC host:port [default: the managed server's].")] = None,
    server: Annotated[str, typer.Option(envvar="MLCTL_SERVER", help="Managed server whose port to use when no --url.")] = "default",
    concurrency: Annotated[str, typer.Option(help="Closed loop: client counts to sweep.")] = "1,4,16",
    rate: Annotated[str | None, typer.Option(help="Open loop instead: requests per second to sweep, e.g. 100,200.")] = None,
    rows: Annotated[int, typer.Option(help="Rows per request.")] = 1,
    input_file: Annotated[Path | None, typer.Option("--input", "-i", help=".npz with one array per input [default: random from the signature].")] = None,
    window_s: Annotated[float | None, typer.Option("--window-s", help="Measurement window, seconds [default: 1].")] = None,
    max_windows: Annotated[int | None, typer.Option(help="Windows before a point is called unstable [default: 8].")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the latency/throughput figure to this PNG.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Throughput, p50/p90/p95/p99, errors and Triton's server-side time per request at each load point; a point
    counts when three windows agree within 10% (warm-up discarded)."""
    from dataclasses import replace

    from controlplane.perf.measure import open_session
    from controlplane.perf.windows import WindowPolicy

    mode, levels = ("rate", parse_levels(rate, "--rate")) if rate else ("concurrency", parse_levels(concurrency, "--concurrency"))
    policy = WindowPolicy()
    policy = replace(policy, seconds=window_s or policy.seconds, max_windows=max_windows or policy.max_windows)  # checked again
    session = open_session(url or _managed_url(ctx, server), model, str(version or ""), rows, input_file, policy)
    try:
        points = session.sweep(mode, levels, progress=note)
    finally:
        session.close()
    if plot:
        from controlplane.perf.plot import plot_curves

        plot_curves({model: [(p.requests_per_s, p.p99_ms) for p in points]}, plot, f"mlctl perf {model} ({mode} sweep)")
    if json:
        emit_json({"model": model, "version": version, "mode": mode, "points": [p.to_dict() for p in points]})
        return
    emit(table(["mode", "level", "req/s", "rows/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "errors", "stable",
                "queue us", "input us", "infer us", "output us", "batch"],
               [[p.mode, f"{p.level:g}", p.requests_per_s, p.rows_per_s, p.p50_ms, p.p90_ms, p.p95_ms, p.p99_ms, p.errors,
                 "yes" if p.stable else "NO", *_server_cells(p.server)] for p in points]))


def _server_cells(server: dict | None) -> list:
    if not server or not server.get("requests"):
        return ["-"] * 5
    return [server["queue_us"], server["compute_input_us"], server["compute_infer_us"], server["compute_output_us"], server["mean_batch"]]


def _managed_url(ctx: typer.Context, server: str) -> str:
    from controlplane.triton.server.state import StateFiles

    state = StateFiles(ctx.obj.home).read(server)
    return state.grpc_url if state is not None else "127.0.0.1:8001"
