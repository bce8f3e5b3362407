"""`mlctl infer`: one request to Triton from a .npy/.npz/.json file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from controlplane.cli.render import emit, emit_json


def infer(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    input: Annotated[Path, typer.Option("--input", "-i", help=".npy (one input), .npz or .json keyed by input name.")],
    version: Annotated[Optional[int], typer.Option("--version", "-v", help="Version [default: what Triton serves].")] = None,
    protocol: Annotated[str, typer.Option(help="grpc or http.")] = "grpc",
    url: Annotated[Optional[str], typer.Option(envvar="MLCTL_TRITON_URL", help="host:port [default: the managed server's port].")] = None,
    server: Annotated[str, typer.Option(envvar="MLCTL_SERVER", help="Managed server whose ports to use when no --url.")] = "default",
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Send one inference request and print the outputs, the version that served, and latency."""
    from controlplane.triton.client import TritonClient, infer_file
    from controlplane.triton.server.state import StateFiles

    if url is None:
        state = StateFiles(ctx.obj.home).read(server)
        if state is not None:
            url = state.grpc_url if protocol == "grpc" else state.http_url
        else:
            url = "127.0.0.1:8001" if protocol == "grpc" else "127.0.0.1:8000"
    with TritonClient(url, protocol) as client:
        result = infer_file(client, model, str(input), str(version or ""))
    if json:
        emit_json(result.to_dict())
        return
    emit(f"model {result.model} version {result.version} via {result.protocol} in {result.latency_ms:.2f} ms")
    for name, array in result.outputs.items():
        emit(f"{name} {list(array.shape)} {array.dtype}:")
        emit(str(array))
