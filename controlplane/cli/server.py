"""`mlctl server`: the managed tritonserver (start, stop, status, logs)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from controlplane.cli.events import action
from controlplane.cli.render import emit, emit_json, note, table

app = typer.Typer(help="Run the real tritonserver locally (or the NGC image through Docker).", no_args_is_help=True)

Name = Annotated[str, typer.Option("--name", envvar="MLCTL_SERVER", help="Server name (several can run side by side).")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _servers(ctx: typer.Context):
    from controlplane.triton.server.local import LocalServers

    return LocalServers(ctx.obj.home, progress=note)


@app.command()
@action("server.start")
def start(
    ctx: typer.Context,
    name: Name = "default",
    http_port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port.")] = 8002,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Load only these models [default: all].")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 120.0,
    runtime: Annotated[str, typer.Option(help="local (the wheel's tritonserver) or docker (NGC image).")] = "local",
    image: Annotated[str, typer.Option(help="Image for --runtime docker.")] = "",
    gpus: Annotated[bool, typer.Option(help="Give the container all GPUs (--runtime docker).")] = False,
    channel: Annotated[Optional[str], typer.Option(envvar="MLCTL_CHANNEL", help="Serve this channel's promoted versions (a replica of that environment).")] = None,
    restrict_control: Annotated[bool, typer.Option(help="Restrict the model-repository API to the control key [default: when a key is set].")] = True,
    tritonserver: Annotated[Optional[str], typer.Option(envvar="MLCTL_TRITONSERVER", help="tritonserver executable [default: the nvidia-pytriton wheel's].")] = None,
    tls_cert: Annotated[Optional[str], typer.Option(help="Server certificate (PEM): serve gRPC over TLS (HTTP stays plain).")] = None,
    tls_key: Annotated[Optional[str], typer.Option(help="Server key (PEM) for --tls-cert.")] = None,
    tls_ca: Annotated[Optional[str], typer.Option(help="CA (PEM) client certificates must be signed by: mutual TLS.")] = None,
    json: Json = False,
) -> None:
    """Start tritonserver in the background and wait until it is ready."""
    from controlplane.errors import UsageError
    from controlplane.store.channels import check_channel
    from controlplane.triton.server.local import ServerOptions
    from controlplane.triton.tls import ServerTls

    if runtime not in ("local", "docker"):
        raise UsageError(f"runtime {runtime!r} must be 'local' or 'docker'")
    tls = ServerTls.create(tls_cert, tls_key, tls_ca)
    if tls and runtime == "docker":
        raise UsageError("--tls-* works with --runtime local", hint="with the NGC image, mount the files and pass --grpc-use-ssl yourself")
    options = ServerOptions(
        repository=ctx.obj.repository,
        name=name,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        models=tuple(model) if model else None,
        timeout_s=timeout,
        runtime=runtime,
        image=image,
        gpus=gpus,
        binary=tritonserver,
        channel=check_channel(channel) if channel else None,
        control_key=ctx.obj.control_key if restrict_control else None,
        tls=tls,
    )
    state = _servers(ctx).start(options)
    if json:
        emit_json(state.to_dict())
    else:
        emit(f"server {state.name!r} ready: http {state.http_url}  grpc {state.grpc_url}{' (' + state.grpc_tls + ' TLS)' if state.grpc_tls else ''}"
             f"  metrics {state.metrics_url}")


@app.command()
@action("server.stop")
def stop(ctx: typer.Context, name: Name = "default", timeout: Annotated[float, typer.Option(help="Seconds before SIGKILL.")] = 30.0) -> None:
    """Stop the server gracefully; exit 3 for a name this home does not know."""
    state = _servers(ctx).stop(name, timeout, must_exist=True)
    emit(f"server {name!r} stopped" if state else f"server {name!r} was not running")


@app.command()
def status(ctx: typer.Context, name: Name = "default", json: Json = False) -> None:
    """Whether the server runs and is ready, with its ports; exit 1 when it is not running or not ready."""
    info = _servers(ctx).status(name)
    if json:
        emit_json(info)
        if not (info["running"] and info["ready"]):  # the same exit code as the text
            raise typer.Exit(1)
        return
    if not info["running"]:
        emit(f"server {name!r}: not running")
        raise typer.Exit(1)
    keys = ("ready", "runtime", "pid", "http_port", "grpc_port", "metrics_port", "grpc_tls", "repository", "channel", "log_path", "started_at")
    rows = [[k, "-" if info.get(k) is None else info[k]] for k in keys]
    emit(table(["server " + name, ""], rows))
    if not info["ready"]:
        raise typer.Exit(1)


@app.command()
def logs(ctx: typer.Context, name: Name = "default", lines: Annotated[int, typer.Option("--lines", "-n")] = 50) -> None:
    """The last lines of the server's log."""
    emit(_servers(ctx).logs(name, lines))
