"""`mlctl pipeline publish` and `mlctl pipeline switch`: pre -> model -> post as one versioned unit."""

from __future__ import annotations

import json as jsonlib
import os
from pathlib import Path
from typing import Annotated

import typer

from controlplane.cli.events import action
from controlplane.cli.render import emit, emit_json, note

app = typer.Typer(help="Pipelines: Python pre/post-processing steps around a published model, served as one ensemble.",
                  no_args_is_help=True)


@app.command("publish")
@action("pipeline-publish", model="name")
def publish(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pipeline name (a Triton ensemble; its steps are NAME.pre, NAME.model, NAME.post).")],
    model: Annotated[str, typer.Option("--model", help="The published model the pipeline wraps.")],
    model_version: Annotated[int, typer.Option("--model-version", help="Its version, copied into the pipeline.")],
    pre: Annotated[Path | None, typer.Option("--pre", help="Pre-processing step file (INPUTS, OUTPUTS, process).")] = None,
    post: Annotated[Path | None, typer.Option("--post", help="Post-processing step file (INPUTS, OUTPUTS, process).")] = None,
    metadata: Annotated[list[str] | None, typer.Option("--metadata", "-m", help="key=value to record in the manifest.")] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="Reference sample .npz of the pipeline's raw inputs: "
                                                      "features, predicted (its answers), labels optional; for monitor and gate.")] = None,
    sign_key: Annotated[Path | None, typer.Option(envvar="MLCTL_SIGNING_KEY", help="Sign the pipeline version (its manifest pins every component file) with this EC private key (PEM; password from MLCTL_SIGNING_KEY_PASSWORD).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Publish the next immutable version of a pipeline, checked before anything is written."""
    from controlplane.cli.export import parse_metadata
    from controlplane.quality.reference import ReferenceSample
    from controlplane.store import open_store
    from controlplane.store.pipelines import publish_pipeline
    from controlplane.store.repository import Repository

    repo = Repository(open_store(ctx.obj.repository))
    sample = ReferenceSample.read(reference) if reference else None  # checked before anything is written
    manifest = publish_pipeline(repo, name, model, model_version, pre, post, parse_metadata(metadata or [], None), sample,
                                sign_key, os.environ.get("MLCTL_SIGNING_KEY_PASSWORD"))
    if json:
        emit_json({**jsonlib.loads(manifest.to_json()), **({"signed": True} if sign_key else {})})
    else:
        signed = f", signed with {sign_key}" if sign_key else ""
        emit(f"published pipeline {name} version {manifest.version} ({model} v{model_version}) to {ctx.obj.repository}{signed}; "
             f"next: mlctl pipeline switch {name} {manifest.version} --replica HOST:GRPC_PORT")


@app.command("switch")
@action("pipeline-switch", model="name")
def switch(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pipeline name.")],
    version: Annotated[int, typer.Argument(help="Version to serve (newer: promote; older: roll back).")],
    replica: Annotated[list[str], typer.Option("--replica", help="A replica's gRPC endpoint (repeatable).")],
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Move every replica to a pipeline version as one unit, with no request seeing mixed versions."""
    from controlplane.release.pipeline import switch_pipeline
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.replicas import open_replicas

    repo = Repository(open_store(ctx.obj.repository)).require()
    replicas = open_replicas(tuple(replica), ctx.obj.control_key)
    try:
        result = switch_pipeline(repo, name, version, replicas, progress=note)
    finally:
        for r in replicas:
            r.close()
    if json:
        emit_json(result.to_dict())
    else:
        emit(f"pipeline {name}: {result.from_version or '-'} -> {result.to_version} on {len(result.replicas)} replica(s) "
             f"in {result.seconds:.2f} s")
