"""`mlctl console`: the web console."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from controlplane.cli.render import note


def console(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8090,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    repository: Annotated[str | None, typer.Option("--repository", "-r", help="Model repository [default: the global --repository].")] = None,
    targets: Annotated[str | None, typer.Option("--targets", help="Targets file [default: the global --targets].")] = None,
    prometheus_url: Annotated[str | None, typer.Option(envvar="MLCTL_PROMETHEUS_URL", help="Prometheus base URL for serving figures.")] = None,
    log: Annotated[str | None, typer.Option(envvar="MLCTL_PREDICTION_LOG", help="The gateway's prediction log, for the quality report.")] = None,
    admin_keys: Annotated[str | None, typer.Option(envvar="MLCTL_CONSOLE_ADMIN_KEYS", help="Comma-separated keys that may promote, roll back and abort; none: read-only.")] = None,
    window: Annotated[str, typer.Option(help="Window for serving figures and quality, e.g. 5m, 1h.")] = "1h",
) -> None:
    """Serve the web console: models, channels against replicas, history, canary, serving and quality."""
    import uvicorn

    from controlplane.console.app import create_app
    from controlplane.console.settings import ConsoleSettings
    from controlplane.errors import ConflictError
    from controlplane.observe.metrics.definitions import parse_window
    from controlplane.readiness import port_open
    from controlplane.triton.targets import load_targets

    parse_window(window)
    settings = ctx.obj
    console_settings = ConsoleSettings(
        repository=repository or settings.repository, targets_file=targets or settings.targets_file,
        control_key=settings.control_key, prometheus_url=prometheus_url, log=log,
        admin_keys=tuple(k.strip() for k in (admin_keys or "").split(",") if k.strip()), window=window)
    load_targets(console_settings.targets_file)  # a bad targets file is bad input now, not a broken page later
    if port_open(host, port, timeout=0.5):
        raise ConflictError(f"port {port} on {host} is in use", hint="pass another --port")
    mode = "read-only (no admin keys)" if console_settings.read_only else "actions allowed with an admin key"
    note(f"console on http://{host}:{port} for {console_settings.repository}: {mode}; Ctrl-C to stop")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # uvicorn stops gracefully on SIGTERM, then re-raises it
    uvicorn.run(create_app(console_settings), host=host, port=port, log_level="warning")
