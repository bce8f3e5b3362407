"""Export a PyTorch model to TorchScript and ONNX, checked for parity against eager PyTorch.

The model comes from `module.path:factory` (a callable returning an nn.Module) or a saved TorchScript
file. The export is written to a fresh folder (an ExportBundle) only once every format passed parity.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controlplane.errors import (
    CheckFailedError,
    ConflictError,
    MlctlError,
    NotFoundError,
    UsageError,
)
from controlplane.export.parity import ParityResult, compare
from controlplane.model.bundle import BUNDLE_FILE, ExportBundle
from controlplane.model.config import FILENAMES
from controlplane.model.provenance import framework_versions, utc_now
from controlplane.model.signature import Signature, TensorSpec
from controlplane.model.tensor_io import check_inputs, read_tensor_file

Progress = Callable[[str], None]
FORMATS = ("onnx", "torchscript")
_VARIABLE_DIM_SIZES = (3, 5)  # concrete sizes given to -1 dims in random samples


@dataclass(frozen=True)
class ExportRequest:
    source: str  # "module.path:factory" or a TorchScript file
    inputs: tuple[TensorSpec, ...]
    out_dir: Path
    output_names: tuple[str, ...] = ()
    formats: tuple[str, ...] = FORMATS
    max_batch_size: int = 8
    opset: int = 17
    onnx_exporter: str = "torchscript"  # torchscript (fast, classic) | dynamo
    atol: float = 1e-4
    rtol: float = 1e-3
    samples: tuple[Path, ...] = ()
    batch_sizes: tuple[int, ...] = (1, 4)
    int_high: int = 10  # random integer inputs are drawn from [0, int_high)
    seed: int = 0
    overwrite: bool = False

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise UsageError(f"format(s) {', '.join(bad) or '(none)'} not supported; use {', '.join(FORMATS)}")
        if self.onnx_exporter not in ("torchscript", "dynamo"):
            raise UsageError(f"ONNX exporter {self.onnx_exporter!r} must be 'torchscript' or 'dynamo'")
        if self.atol < 0 or self.rtol < 0:
            raise UsageError("tolerances must not be negative")
        if self.max_batch_size < 0:
            raise UsageError("max batch size must be 0 (no batch dimension) or positive")


def load_model(source: str):
    """An eval-mode nn.Module (or ScriptModule) from `module.path:factory` or a TorchScript file."""
    import torch

    if os.path.isfile(source):
        try:
            return torch.jit.load(source, map_location="cpu").eval()
        except RuntimeError as exc:
            raise UsageError(f"{source} is not a TorchScript file: {str(exc).splitlines()[0]}") from exc
    module_name, sep, factory_name = source.partition(":")
    if not sep or not module_name or not factory_name:
        if source.endswith((".pt", ".pth", ".ts")):
            raise NotFoundError(f"TorchScript file {source} not found")
        raise UsageError(
            f"model {source!r} is neither a file nor 'module.path:factory'",
            hint="for example mlctl export mypkg.models:build_model --input x:float32:64",
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"module {module_name!r} not found ({exc})", hint="check the name and your PYTHONPATH") from exc
    except Exception as exc:  # the user's module failed while importing: show its error, do not crash
        raise UsageError(f"module {module_name!r} failed to import: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if factory is None:
        raise UsageError(f"module {module_name!r} has no attribute {factory_name!r}")
    if not callable(factory):
        raise UsageError(f"{source}: {factory_name!r} is not callable")
    try:
        model = factory() if not isinstance(factory, torch.nn.Module) else factory
    except Exception as exc:  # the user's factory failed: report it as bad input
        raise UsageError(f"{source}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"{source} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def random_sample(specs: Sequence[TensorSpec], batch: int | None, rng: np.random.Generator, int_high: int, variable: int):
    arrays = {}
    for spec in specs:
        shape = tuple(variable if d == -1 else d for d in spec.dims)
        if batch is not None:
            shape = (batch, *shape)
        if spec.dtype == "bool":
            arrays[spec.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif np.dtype(spec.dtype).kind in "iu":
            arrays[spec.name] = rng.integers(0, int_high, size=shape).astype(spec.dtype)
        else:
            arrays[spec.name] = rng.standard_normal(size=shape).astype(spec.dtype)
    return arrays


def _as_outputs(result) -> list:
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)):
        return list(result)
    if isinstance(result, dict):
        return list(result.values())
    raise UsageError(f"the model returned {type(result).__name__}; it must return tensors (a tensor, tuple or dict)")


class _Runner:
    """Calls a torch module with numpy inputs in signature order and returns named numpy outputs."""

    def __init__(self, module, inputs: Sequence[TensorSpec], output_names: Sequence[str]) -> None:
        self.module, self.inputs, self.output_names = module, inputs, output_names

    def __call__(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            result = _as_outputs(self.module(*[torch.from_numpy(sample[s.name].copy()) for s in self.inputs]))
        if len(result) != len(self.output_names):
            raise UsageError(f"the model returned {len(result)} outputs but {len(self.output_names)} names were given")
        return {n: t.detach().cpu().numpy() for n, t in zip(self.output_names, result)}


def infer_outputs(samples: Sequence[dict[str, np.ndarray]], results: Sequence[dict[str, np.ndarray]], batched: bool):
    """Output specs from eager results: dims that differ between samples become -1."""
    specs = []
    for name in results[0]:
        shapes = [r[name].shape[1:] if batched else r[name].shape for r in results]
        if len({len(s) for s in shapes}) != 1:
            raise UsageError(f"output {name!r} changes rank between samples: {shapes}")
        if batched and any(r[name].ndim == 0 or r[name].shape[0] != len(next(iter(s.values()))) for r, s in zip(results, samples)):
            raise UsageError(f"output {name!r} does not keep the batch dimension first; pass --max-batch-size 0")
        dims = tuple(d if all(s[i] == d for s in shapes) else -1 for i, d in enumerate(shapes[0]))
        specs.append(TensorSpec(name, str(results[0][name].dtype), dims))
    return tuple(specs)


def export_model(request: ExportRequest, progress: Progress | None = None, model=None) -> ExportBundle:
    """Export `request.source` (or an nn.Module already in hand, with `source` as its description)."""
    say = progress or (lambda _msg: None)
    out_dir = Path(request.out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not request.overwrite:
        raise ConflictError(f"export folder {out_dir} is not empty", hint="choose another --out or pass --overwrite")
    import torch

    torch.manual_seed(request.seed)
    model = load_model(request.source) if model is None else model.eval()
    batched = request.max_batch_size > 0
    rng = np.random.default_rng(request.seed)

    samples: list[dict[str, np.ndarray]] = []
    labels: list[str] = []
    batches = [b for b in request.batch_sizes if b <= request.max_batch_size] or [1] if batched else [None]
    for batch in batches:
        for variable in _VARIABLE_DIM_SIZES if any(-1 in s.dims for s in request.inputs) else _VARIABLE_DIM_SIZES[:1]:
            samples.append(random_sample(request.inputs, batch, rng, request.int_high, variable))
            labels.append(f"random batch {batch}" if batched else "random sample")
    for path in request.samples:
        samples.append(check_inputs(read_tensor_file(path, request.inputs), request.inputs, request.max_batch_size, str(path)))
        labels.append(str(path))

    try:
        probe = _as_outputs(model(*[torch.from_numpy(samples[0][s.name].copy()) for s in request.inputs]))
    except UsageError:
        raise
    except Exception as exc:  # the model rejected the declared inputs: the spec is wrong
        raise UsageError(
            f"the model failed on inputs shaped by the spec ({', '.join(s.describe(batched) for s in request.inputs)}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="check --input names, dtypes and dims",
        ) from exc
    names = request.output_names or tuple(f"output_{i}" for i in range(len(probe)))
    if len(names) != len(probe):
        raise UsageError(f"the model returns {len(probe)} outputs but {len(names)} --output names were given")
    eager = _Runner(model, request.inputs, names)
    expected = [eager(s) for s in samples]
    signature = Signature(request.inputs, infer_outputs(samples, expected, batched), request.max_batch_size)
    say(f"signature: {', '.join(s.describe(batched) for s in signature.inputs)} -> "
        f"{', '.join(s.describe(batched) for s in signature.outputs)}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        parity: dict[str, ParityResult] = {}
        for fmt in request.formats:
            path = staging / FILENAMES[fmt]
            say(f"exporting {fmt} to {path.name}")
            runner = _export_onnx(model, signature, samples[0], path, request) if fmt == "onnx" else \
                _export_torchscript(model, signature, samples[0], path)
            parity[fmt] = compare(expected, [runner(s) for s in samples], request.atol, request.rtol, labels)
            result = parity[fmt]
            say(f"parity {fmt}: max abs {result.max_abs_error:.3g}, max rel {result.max_rel_error:.3g} "
                f"over {result.samples} samples: {'ok' if result.passed else 'FAILED'}")
        failed = {f: r for f, r in parity.items() if not r.passed}
        if failed:
            detail = "; ".join(
                f"{f}: max abs {r.max_abs_error:.3g}, max rel {r.max_rel_error:.3g} (worst: {r.worst})" for f, r in failed.items()
            )
            raise CheckFailedError(
                f"parity check failed against eager PyTorch (atol {request.atol}, rtol {request.rtol}): {detail}",
                hint="nothing was written; fix the model (data-dependent control flow does not trace) or loosen --atol/--rtol",
            )
        bundle = ExportBundle(
            path=out_dir,
            signature=signature,
            formats=tuple(request.formats),
            parity={f: r.to_dict() for f, r in parity.items()},
            source=request.source,
            created_at=utc_now(),
            frameworks=framework_versions(),
        )
        (staging / BUNDLE_FILE).write_text(bundle.to_json())
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
        return bundle
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_torchscript(model, signature: Signature, example: dict, path: Path) -> _Runner:
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        scripted = model
    else:
        args = tuple(torch.from_numpy(example[s.name].copy()) for s in signature.inputs)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings are judged by the parity check instead
                scripted = torch.jit.trace(model, args, strict=False, check_trace=False)
        except Exception as exc:  # tracing failures come in many types; all mean the same to the user
            raise MlctlError(f"TorchScript tracing failed: {type(exc).__name__}: {exc}") from exc
    scripted.save(str(path))
    return _Runner(torch.jit.load(str(path), map_location="cpu").eval(), signature.inputs, [s.name for s in signature.outputs])


def _export_onnx(model, signature: Signature, example: dict, path: Path, request: ExportRequest):
    import torch

    args = tuple(torch.from_numpy(example[s.name].copy()) for s in signature.inputs)
    dynamic_axes = {}
    for spec in (*signature.inputs, *signature.outputs):
        axes = {0: "batch"} if signature.batched else {}
        offset = 1 if signature.batched else 0
        axes.update({i + offset: f"{spec.name}_d{i}" for i, d in enumerate(spec.dims) if d == -1})
        if axes:
            dynamic_axes[spec.name] = axes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=[s.name for s in signature.inputs],
                output_names=[s.name for s in signature.outputs],
                dynamic_axes=dynamic_axes or None,
                opset_version=request.opset,
                dynamo=request.onnx_exporter == "dynamo",
                external_data=False,
            )
    except Exception as exc:  # exporter errors come in many types; all mean the same to the user
        raise MlctlError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return _OnnxRunner(path, [s.name for s in signature.outputs])


class _OnnxRunner:
    def __init__(self, path: Path, output_names: Sequence[str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.output_names = list(output_names)
        self.input_names = {i.name for i in self.session.get_inputs()}

    def __call__(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # the exporter drops inputs the graph does not use; feed only what it kept
        feeds = {k: v for k, v in sample.items() if k in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))

