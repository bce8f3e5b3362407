"""Pipelines: pre-process -> model -> post-process served as one Triton ensemble, one version for all.

A pipeline `P` at version v is four Triton models, every one at version v: `P.pre` and `P.post` (Python-backend
steps, `model/step_backend.py` running the user's step file), `P.model` (a copy of the published model's files)
and `P` (the ensemble, whose steps pin version v of each component). Each pipeline version's ensemble config is
generated from its manifest, so the ensemble's own config has a version too (server#8056), and a pin is a pin.

Step files are checked here before anything is written: the module imports, defines `process`, declares INPUTS
and OUTPUTS that connect to the model, and answers a random batch with what it declared.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controlplane.errors import NotFoundError, UsageError
from controlplane.model.config import VersionPolicy, _pb, apply_version_policy
from controlplane.model.signature import (
    Signature,
    TensorSpec,
    parse_tensor_spec,
    triton_type,
)

PRE, POST, MODEL = "pre", "post", "model"
STEP_FILE, BACKEND_FILE = "step.py", "model.py"
BACKEND_SOURCE = Path(__file__).with_name("step_backend.py")


def component_name(pipeline: str, role: str) -> str:
    return f"{pipeline}.{role}"


@dataclass(frozen=True)
class Step:
    role: str  # pre | post
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def load_step(path: Path, role: str) -> tuple[Step, object]:
    """The step's declared signature and its `process` function; a clear UsageError for any defect."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{role}-processing step file {path} not found")
    name = f"mlctl_check_{role}_{abs(hash(str(path.resolve())))}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's module failed while loading: show its error, write nothing
        raise UsageError(f"{role}-processing step {path} raised while loading: {type(exc).__name__}: {exc}",
                         hint="it must import with numpy alone (Triton's Python backend runs it); nothing was written") from exc
    finally:
        sys.modules.pop(name, None)
    process = getattr(module, "process", None)
    if not callable(process):
        raise UsageError(f"{role}-processing step {path} does not define process(inputs) -> outputs",
                         hint="def process(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]; nothing was written")
    specs = {}
    for key in ("INPUTS", "OUTPUTS"):
        declared = getattr(module, key, None)
        if not isinstance(declared, (list, tuple)) or not declared or not all(isinstance(s, str) for s in declared):
            raise UsageError(f"{role}-processing step {path}: {key} must be a non-empty list of 'name:dtype:dims'",
                             hint='for example INPUTS = ["image:uint8:64"]; nothing was written')
        specs[key] = tuple(parse_tensor_spec(s) for s in declared)
    return Step(role, path, specs["INPUTS"], specs["OUTPUTS"]), process


def check_connections(model: Signature, pre: Step | None, post: Step | None) -> Signature:
    """The pipeline's signature, once every tensor a step or the model reads is produced upstream (pure)."""
    def same(a: TensorSpec, b: TensorSpec) -> bool:
        return (a.dtype, a.dims) == (b.dtype, b.dims)

    if pre is not None:
        produced = {s.name: s for s in pre.outputs}
        for want in model.inputs:
            got = produced.get(want.name)
            if got is None or not same(got, want):
                have = f"it declares {got.dtype}{list(got.dims)}" if got else f"its OUTPUTS are {', '.join(produced)}"
                raise UsageError(f"pre-processing step {pre.path} does not produce model input {want.name!r} "
                                 f"({want.dtype}{list(want.dims)}): {have}", hint="declare matching OUTPUTS; nothing was written")
    if post is not None:
        produced = {s.name: s for s in model.outputs}
        for want in post.inputs:
            got = produced.get(want.name)
            if got is None or not same(got, want):
                raise UsageError(f"post-processing step {post.path} reads {want.name!r} ({want.dtype}{list(want.dims)}), "
                                 f"which the model does not produce (outputs: "
                                 f"{', '.join(f'{s.name} {s.dtype}{list(s.dims)}' for s in model.outputs)})",
                                 hint="declare INPUTS among the model's outputs; nothing was written")
        inner = {s.name for s in (*model.inputs, *model.outputs, *(pre.inputs if pre else ()))}
        clash = sorted(s.name for s in post.outputs if s.name in inner)
        if clash:
            raise UsageError(f"post-processing step {post.path}: output name(s) {', '.join(clash)} already name a tensor "
                             "inside the pipeline", hint="rename the step's outputs; nothing was written")
    inputs = pre.inputs if pre else model.inputs
    outputs = post.outputs if post else model.outputs
    return Signature(inputs, outputs, model.max_batch_size)


def smoke_test(step: Step, process, batched: bool) -> None:
    """Run `process` on a random batch of 2 and check it returns what it declares."""
    from controlplane.export.samples import random_sample

    sample = random_sample(step.inputs, 2 if batched else None, np.random.default_rng(0), 10, 4)
    try:
        result = process(sample)
    except Exception as exc:  # the user's code failed on declared inputs
        raise UsageError(f"{step.role}-processing step {step.path} raised on a random batch of its INPUTS: "
                         f"{type(exc).__name__}: {exc}", hint="nothing was written") from exc
    if not isinstance(result, dict):
        raise UsageError(f"{step.role}-processing step {step.path}: process returned {type(result).__name__}, not a dict")
    for spec in step.outputs:
        value = result.get(spec.name)
        if value is None:
            raise UsageError(f"{step.role}-processing step {step.path}: process did not return declared output {spec.name!r}")
        value = np.asarray(value)
        if not spec.matches_shape(value.shape, batched):
            raise UsageError(f"{step.role}-processing step {step.path}: output {spec.name!r} has shape "
                             f"{list(value.shape)}, declared {spec.describe(batched)}")


def step_config(name: str, step: Step, max_batch_size: int, version: int):
    pb = _pb()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    _add_tensors(config, step.inputs, step.outputs, max_batch_size > 0)
    config.instance_group.add(count=1).kind = pb.ModelInstanceGroup.Kind.Value("KIND_CPU")
    apply_version_policy(config, VersionPolicy("specific", (version,)))
    return config


def ensemble_config(pipeline: str, signature: Signature, roles: dict[str, tuple[Signature | Step, int]]):
    """The ensemble whose steps pin each component's version (pure). `roles` maps pre/model/post to (io, version)."""
    pb = _pb()
    config = pb.ModelConfig(name=pipeline, platform="ensemble", max_batch_size=signature.max_batch_size)
    _add_tensors(config, signature.inputs, signature.outputs, signature.batched)
    for role in (PRE, MODEL, POST):
        if role not in roles:
            continue
        io, version = roles[role]
        step = config.ensemble_scheduling.step.add(model_name=component_name(pipeline, role), model_version=version)
        for spec in io.inputs:
            step.input_map[spec.name] = spec.name
        for spec in io.outputs:
            step.output_map[spec.name] = spec.name
    apply_version_policy(config, VersionPolicy("specific", (max(v for _io, v in roles.values()),)))
    return config


def _add_tensors(config, inputs, outputs, batched: bool) -> None:
    pb = _pb()
    for spec, target in [(s, config.input) for s in inputs] + [(s, config.output) for s in outputs]:
        entry = target.add(name=spec.name, data_type=pb.DataType.Value(triton_type(spec.dtype)))
        if spec.dims or not batched:
            entry.dims.extend(spec.dims)
        else:
            entry.dims.append(1)
            entry.reshape.SetInParent()
