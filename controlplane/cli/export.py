"""`mlctl export` and `mlctl publish`."""

from __future__ import annotations

import json as jsonlib
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from controlplane.cli.events import action
from controlplane.cli.render import emit, emit_json, note


def _split(values: Optional[list[str]]) -> tuple[str, ...]:
    return tuple(v.strip() for item in values or [] for v in item.split(",") if v.strip())


@action("export")
def export(
    source: Annotated[str, typer.Argument(help="'module.path:factory' returning an nn.Module, or a TorchScript file.")],
    input: Annotated[list[str], typer.Option("--input", "-i", help="name:dtype:dims per input, dims without the batch, e.g. x:float32:64.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the export to (must be new or empty).")],
    output: Annotated[Optional[list[str]], typer.Option("--output", help="Output names, in the order the model returns them.")] = None,
    format: Annotated[Optional[list[str]], typer.Option("--format", "-f", help="onnx, torchscript, or both [default: both].")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Dynamic batch dimension up to this size; 0 for none.")] = 8,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
    onnx_exporter: Annotated[str, typer.Option(help="auto (classic, then dynamo where a dynamic length fails parity), torchscript (classic) or dynamo.")] = "auto",
    sample: Annotated[Optional[list[Path]], typer.Option("--sample", help="Extra parity inputs (.npy/.npz/.json).")] = None,
    atol: Annotated[float, typer.Option(help="Absolute tolerance of the parity check.")] = 1e-4,
    rtol: Annotated[float, typer.Option(help="Relative tolerance of the parity check.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed for the random parity inputs.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out folder.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Export to TorchScript and/or ONNX and check parity against eager PyTorch."""
    from controlplane.export.exporter import FORMATS, ExportRequest, export_model
    from controlplane.model.signature import parse_tensor_spec

    request = ExportRequest(
        source=source,
        inputs=tuple(parse_tensor_spec(i) for i in input),
        out_dir=out,
        output_names=_split(output),
        formats=_split(format) or FORMATS,
        max_batch_size=max_batch_size,
        opset=opset,
        onnx_exporter=onnx_exporter,
        atol=atol,
        rtol=rtol,
        samples=tuple(sample or ()),
        seed=seed,
        overwrite=overwrite,
    )
    bundle = export_model(request, progress=note)
    if json:
        emit_json({"path": str(bundle.path), **jsonlib.loads(bundle.to_json())})
        return
    for fmt, result in bundle.parity.items():
        emit(f"{fmt}: parity ok (max abs {result['max_abs_error']:.3g}, max rel {result['max_rel_error']:.3g}, {result['samples']} samples)")
    emit(f"exported to {bundle.path}; next: mlctl publish {bundle.path} --name NAME")


@action("publish", model="name")
def publish(
    ctx: typer.Context,
    export_dir: Annotated[Path, typer.Argument(help="A folder written by 'mlctl export'.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Model name in the repository.")],
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="Which exported format to publish (needed when there are two).")] = None,
    metadata: Annotated[Optional[list[str]], typer.Option("--metadata", "-m", help="key=value to record in the manifest (repeatable).")] = None,
    metadata_file: Annotated[Optional[Path], typer.Option(help="A JSON object to record in the manifest, e.g. evaluation metrics.")] = None,
    reference: Annotated[Optional[Path], typer.Option(help="Reference sample (.npz: features, predicted, labels) kept as the drift baseline.")] = None,
    instance_count: Annotated[int, typer.Option(help="Model instances (new models only).")] = 1,
    instance_kind: Annotated[str, typer.Option(help="cpu or gpu (new models only).")] = "cpu",
    dynamic_batching: Annotated[bool, typer.Option(help="Dynamic batching (new models only).")] = True,
    max_queue_delay_us: Annotated[int, typer.Option(help="Dynamic batching delay in microseconds.")] = 500,
    version_policy: Annotated[str, typer.Option(help="latest:N, all or specific:1,2 (new models only).")] = "latest:1",
    warmup: Annotated[bool, typer.Option(help="A warm-up request (random inputs of the signature) before a version is ready (new models only).")] = True,
    max_queue_size: Annotated[int, typer.Option(help="Reject at once beyond this many queued requests; 0 unbounded (new models only).")] = 0,
    queue_timeout_us: Annotated[int, typer.Option(help="Reject a request queued longer than this; 0 never (new models only).")] = 0,
    sign_key: Annotated[Optional[Path], typer.Option(envvar="MLCTL_SIGNING_KEY", help="Sign the version with this EC private key (PEM; password from MLCTL_SIGNING_KEY_PASSWORD).")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Add the next immutable version of a model to the repository, with its manifest."""
    from controlplane.errors import UsageError
    from controlplane.model.bundle import ExportBundle
    from controlplane.model.config import ServingOptions, VersionPolicy
    from controlplane.quality.reference import ReferenceSample
    from controlplane.store import open_store
    from controlplane.store.local import LocalStore
    from controlplane.store.repository import Repository

    bundle = ExportBundle.load(export_dir)
    if format is None:
        if len(bundle.formats) != 1:
            raise UsageError(f"export {export_dir} has {', '.join(bundle.formats)}; choose one with --format")
        format = bundle.formats[0]
    options = ServingOptions(
        dynamic_batching=dynamic_batching,
        max_queue_delay_us=max_queue_delay_us,
        instance_count=instance_count,
        instance_kind=instance_kind,
        version_policy=VersionPolicy.parse(version_policy),
        warmup=warmup,
        max_queue_size=max_queue_size,
        queue_timeout_us=queue_timeout_us,
    )
    meta = parse_metadata(metadata or [], metadata_file)
    store = open_store(ctx.obj.repository)
    if isinstance(store, LocalStore) and not store.exists():  # the first publish makes a local repository
        store.root.mkdir(parents=True)
        note(f"created the model repository {store.root}")
    manifest = Repository(store).publish(bundle, name, format, options, meta, ReferenceSample.read(reference) if reference else None,
                                         sign_key=sign_key, sign_password=os.environ.get("MLCTL_SIGNING_KEY_PASSWORD"))
    signed = f", signed with {sign_key}" if sign_key else ""
    if json:
        emit_json({**jsonlib.loads(manifest.to_json()), **({"signed": True} if sign_key else {})})
    else:
        emit(f"published {manifest.model} version {manifest.version} ({manifest.format}) to {ctx.obj.repository}{signed}")


def parse_metadata(pairs: list[str], path: Optional[Path]) -> dict:
    from controlplane.errors import NotFoundError, UsageError

    data: dict = {}
    if path is not None:
        if not path.is_file():
            raise NotFoundError(f"metadata file {path} not found")
        try:
            data = jsonlib.loads(path.read_text())
        except ValueError as exc:
            raise UsageError(f"metadata file {path} is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise UsageError(f"metadata file {path} must hold a JSON object")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"metadata {pair!r} is not key=value")
        try:
            data[key] = jsonlib.loads(value)
        except ValueError:
            data[key] = value
    return data
