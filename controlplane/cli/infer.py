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
    from controlplane.errors import NotFoundError
    from controlplane.triton.client import TritonClient, infer_file
    from controlplane.triton.server.state import StateFiles

    if url is None:
        state = StateFiles(ctx.obj.home).read(server)
        if state is not None:
            url = state.grpc_url if protocol == "grpc" else state.http_url
        else:
            url = "127.0.0.1:8001" if protocol == "grpc" else "127.0.0.1:8000"
    with TritonClient(url, protocol) as client:
        try:
            result = infer_file(client, model, str(input), str(version or ""))
        except NotFoundError as exc:
            if version is None:
                raise
            raise _version_not_served(client, model, version) or exc
    if json:
        data = result.to_dict()
        data["version"] = int(data["version"]) if data["version"].isdigit() else data["version"]
        emit_json(data)
        return
    emit(f"model {result.model} version {result.version} via {result.protocol} in {result.latency_ms:.2f} ms")
    for name, array in result.outputs.items():
        emit(f"{name} {list(array.shape)} {array.dtype}:")
        emit(str(array))


def _version_not_served(client, model: str, version: int):
    """Why Triton has no version `version` of a model it does serve: its version policy, named, with the way out.
    None when the model itself is not served (the original error says that)."""
    from controlplane.errors import MlctlError, NotFoundError
    from controlplane.model.config import version_policy_of

    try:
        policy = version_policy_of(client.model_config(model))
    except MlctlError:
        return None
    if policy.kind == "all":
        why = "its version policy 'all' loads every version in the repository, and there is no such version"
        hint = f"run 'mlctl model versions {model}'"
    else:
        loads = "the newest version" if policy.values == (1,) else f"the newest {policy.values[0]} versions"
        loads = loads if policy.kind == "latest" else f"only version(s) {', '.join(map(str, policy.values))}"
        why = f"its version policy is {policy}, so Triton loads {loads}"
        hint = (f"to serve version {version}, run a channel's replica ('mlctl server start --name NAME --channel CHANNEL') and "
                f"'mlctl promote {model} {version} --to CHANNEL'; a model's policy is set at its first publish "
                f"(--version-policy all serves every version)")
    return NotFoundError(f"version {version} of {model!r} is not loaded on Triton at {client.url}: {why}", hint=hint)
