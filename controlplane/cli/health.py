"""`mlctl health`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from controlplane.cli.render import emit, emit_json, table


def health(
    ctx: typer.Context,
    url: Annotated[Optional[list[str]], typer.Option("--url", help="Triton gRPC endpoints [default: managed servers and channel replicas].")] = None,
    prometheus_url: Annotated[Optional[str], typer.Option(envvar="MLCTL_PROMETHEUS_URL", help="Also check this Prometheus.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Servers live and ready, each loaded model ready, repository and Prometheus reachable; exit 1 on any failure."""
    from controlplane.observe.health import run_checks
    from controlplane.triton.server.local import LocalServers
    from controlplane.triton.targets import load_targets

    settings = ctx.obj
    if not url:
        servers = LocalServers(settings.home)
        url = [s.grpc_url for n in servers.files.names() if (s := servers.running(n))]
        url += [r for replicas in load_targets(settings.targets_file).channels.values() for r in replicas]
        url = list(dict.fromkeys(url))
    checks = run_checks(url, settings.repository, prometheus_url, settings.control_key)
    healthy = all(c.ok for c in checks)
    if json:
        emit_json({"healthy": healthy, "checks": [c.to_dict() for c in checks]})
    else:
        emit(table(["check", "ok", "detail"], [[c.name, "ok" if c.ok else "FAIL", c.detail] for c in checks]))
    if not healthy:
        raise typer.Exit(1)
