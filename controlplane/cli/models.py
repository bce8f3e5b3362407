"""`mlctl model`: what the repository holds."""

from __future__ import annotations

from typing import Annotated

import typer

from controlplane.cli.render import emit, emit_json, table

app = typer.Typer(help="Inspect the models and versions in the repository.", no_args_is_help=True)
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def repository(ctx: typer.Context):
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    return Repository(open_store(ctx.obj.repository)).require()


@app.command("list")
def list_models(ctx: typer.Context, json: Json = False) -> None:
    """Models in the repository, with their format, versions and the version a canary serves."""
    from controlplane.release.canary.companion import canary_version

    repo = repository(ctx)
    summaries = [{**repo.summary(n).to_dict(), "canary": canary_version(repo, n)} for n in repo.model_names()]
    if json:
        emit_json({"repository": repo.uri, "models": summaries})
        return
    rows = [[s["name"], s["format"], ",".join(map(str, s["versions"])), s["latest"], s["version_policy"], s["canary"]]
            for s in summaries]
    emit(table(["model", "format", "versions", "latest", "policy", "canary"], rows))


@app.command()
def versions(ctx: typer.Context, name: str, json: Json = False) -> None:
    """The published versions of a model, from their manifests."""
    from controlplane.release.canary.companion import refuse_companion

    repo = repository(ctx)
    refuse_companion(repo, name)
    manifests = [repo.manifest(name, v).summary() for v in repo.versions(name)]
    if json:
        emit_json({"repository": repo.uri, "model": name, "versions": manifests})
        return
    rows = [
        [m["version"], m["format"], m["created_at"], m["size_bytes"], m["parity_passed"], _metrics(m["metadata"])]
        for m in manifests
    ]
    emit(table(["version", "format", "created", "bytes", "parity", "metadata"], rows))


@app.command()
def show(ctx: typer.Context, name: str, version: int) -> None:
    """A version's whole manifest (JSON)."""
    import json as jsonlib

    emit_json(jsonlib.loads(repository(ctx).manifest(name, version).to_json()))


@app.command()
def verify(ctx: typer.Context, name: str, version: int) -> None:
    """Check a version's files against the sha256 hashes in its manifest."""
    from controlplane.errors import CheckFailedError

    problems = repository(ctx).verify(name, version)
    if problems:
        raise CheckFailedError(f"version {version} of {name!r} does not match its manifest: {'; '.join(problems)}")
    emit(f"{name} version {version}: every file matches its manifest")


def _metrics(metadata: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in metadata.items() if not isinstance(v, (dict, list)))
