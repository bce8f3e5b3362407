"""`mlctl quickstart`: the whole path on a real classifier, end to end."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from controlplane.cli.events import action
from controlplane.cli.render import emit, emit_json, note, table


@action("quickstart")
def quickstart(
    ctx: typer.Context,
    workdir: Annotated[Path, typer.Option(help="Where exports and the sample input go.")] = Path("quickstart-out"),
    name: Annotated[str, typer.Option("--name", help="Name of the server it starts (and restarts on a re-run); never one serving another repository or a channel.")] = "quickstart",
    http_port: Annotated[int, typer.Option(help="HTTP port of the server it starts.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Metrics port.")] = 8002,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Train, export, publish two versions, serve them on Triton and measure accuracy from its answers."""
    from controlplane.demo.quickstart import QuickstartOptions, run_quickstart
    from controlplane.triton.server.local import ServerOptions

    settings = ctx.obj
    server = ServerOptions(
        repository=settings.repository, name=name, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port
    )
    result = run_quickstart(
        QuickstartOptions(repository=settings.repository, home=settings.home, workdir=workdir, server=server),
        progress=note,
    )
    if json:
        emit_json(asdict(result))
        return
    rows = [
        [e.model, e.version, e.format, e.protocol, f"{e.accuracy:.4f}", f"{e.offline_accuracy:.4f}", e.samples]
        for e in result.evaluations
    ]
    emit("Accuracy on the held-out split, computed from Triton's answers:")
    emit(table(["model", "version", "format", "protocol", "accuracy", "offline", "samples"], rows))
    emit(f"\nTimings (s): {result.timings_s}")
    emit(
        f"\nTriton (server {name!r}) is still running. Try next:\n"
        f"  mlctl model list\n"
        f"  mlctl model versions digits\n"
        f"  mlctl infer digits --input {result.sample_file} --server {name}\n"
        f"  mlctl infer digits --input {result.sample_file} --server {name} --version 1 --protocol http\n"
        f"  mlctl server status --name {name}\n"
        f"  mlctl server stop --name {name}"
    )
