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
    NotFoundError,
    UsageError,
)
from controlplane.export.onnx import (
    EXPORTERS,
    describe_dynamic,
    export_onnx,
    exporters_to_try,
)
from controlplane.export.parity import ParityResult, compare
from controlplane.export.samples import parity_samples
from controlplane.model.bundle import BUNDLE_FILE, ExportBundle
from controlplane.model.config import FILENAMES
from controlplane.model.provenance import framework_versions, utc_now
from controlplane.model.signature import Signature, TensorSpec
from controlplane.model.tensor_io import check_inputs, read_tensor_file

Progress = Callable[[str], None]
FORMATS = ("onnx", "torchscript")


@dataclass(frozen=True)
class ExportRequest:
    source: str  # "module.path:factory" or a TorchScript file
    inputs: tuple[TensorSpec, ...]
    out_dir: Path
    output_names: tuple[str, ...] = ()
    formats: tuple[str, ...] = FORMATS
    max_batch_size: int = 8
    opset: int = 17
    onnx_exporter: str = "auto"  # auto | torchscript (fast, classic) | dynamo: see export/onnx.py
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
        if self.onnx_exporter not in EXPORTERS:
            raise UsageError(f"ONNX exporter {self.onnx_exporter!r} must be one of {', '.join(EXPORTERS)}")
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

    samples, labels, trace_index = parity_samples(request.inputs, request.max_batch_size, request.batch_sizes, rng, request.int_high)
    for path in request.samples:
        samples.append(check_inputs(read_tensor_file(path, request.inputs), request.inputs, request.max_batch_size, str(path)))
        labels.append(str(path))

    names = _output_names(model, request, samples[0])
    eager = _Runner(model, request.inputs, names)
    expected = [eager(s) for s in samples]
    signature = Signature(request.inputs, infer_outputs(samples, expected, batched), request.max_batch_size)
    say(f"signature: {', '.join(s.describe(batched) for s in signature.inputs)} -> "
        f"{', '.join(s.describe(batched) for s in signature.outputs)}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        parity: dict[str, ParityResult] = {}
        exporter_used: dict[str, str] = {}
        for fmt in request.formats:
            path = staging / FILENAMES[fmt]
            say(f"exporting {fmt} to {path.name}")
            parity[fmt], exporter_used[fmt] = _export_checked(
                fmt, model, signature, path, request, (samples, trace_index, expected, labels), say)
        _require_parity(parity, request, signature)
        bundle = ExportBundle(
            path=out_dir,
            signature=signature,
            formats=tuple(request.formats),
            parity={f: {**r.to_dict(), "exporter": exporter_used[f]} for f, r in parity.items()},
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


def _output_names(model, request: ExportRequest, sample: dict) -> tuple[str, ...]:
    """The outputs' names, after one eager call on a sample shaped by the spec (a failure means a wrong spec)."""
    import torch

    batched = request.max_batch_size > 0
    try:
        probe = _as_outputs(model(*[torch.from_numpy(sample[s.name].copy()) for s in request.inputs]))
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
    return names


def _require_parity(parity: dict[str, ParityResult], request: ExportRequest, signature: Signature) -> None:
    failed = {f: r for f, r in parity.items() if not r.passed}
    if failed:
        detail = "; ".join(
            f"{f}: max abs {r.max_abs_error:.3g}, max rel {r.max_rel_error:.3g} (worst: {r.worst})" for f, r in failed.items()
        )
        raise CheckFailedError(
            f"parity check failed against eager PyTorch (atol {request.atol}, rtol {request.rtol}): {detail}",
            hint=f"nothing was written; dynamic dims: {describe_dynamic(signature)}; fix the model (data-dependent "
                 "control flow does not trace), a dim that need not vary, --onnx-exporter, or --atol/--rtol",
        )


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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UsageError(
                f"TorchScript tracing failed: {type(exc).__name__}: {first[:300]}",
                hint=f"dynamic dims: {describe_dynamic(signature)}; export ONNX only with --format onnx, or script the model",
            ) from exc
    scripted.save(str(path))
    return _Runner(torch.jit.load(str(path), map_location="cpu").eval(), signature.inputs, [s.name for s in signature.outputs])


def _export_checked(fmt, model, signature, path, request, check, say) -> tuple[ParityResult, str]:
    """Export one format and check it; for ONNX with `auto`, fall back to dynamo where classic fails on a length."""
    samples, trace_index, expected, labels = check
    tries = exporters_to_try(request.onnx_exporter, signature) if fmt == "onnx" else ("trace",)
    for attempt, exporter in enumerate(tries):
        last = attempt == len(tries) - 1
        try:
            runner = export_onnx(model, signature, samples[trace_index], path, request.opset, exporter) if fmt == "onnx" \
                else _export_torchscript(model, signature, samples[trace_index], path)
        except UsageError as exc:
            if last:
                raise
            say(f"{fmt} with the {exporter} exporter failed ({exc.message}); trying {tries[attempt + 1]}")
            continue
        result = _run_parity(fmt, exporter, runner, signature, samples, expected, labels, request, raise_=last)
        say(f"parity {fmt} ({exporter}): max abs {result.max_abs_error:.3g}, max rel {result.max_rel_error:.3g} "
            f"over {result.samples} samples: {'ok' if result.passed else 'FAILED'}")
        if result.passed or last:
            return result, exporter
        say(f"{fmt} with the {exporter} exporter disagrees with eager PyTorch ({result.worst}); trying {tries[attempt + 1]}")
    raise AssertionError("unreachable: the last exporter returns or raises")


def _run_parity(fmt, exporter, runner, signature, samples, expected, labels, request, raise_: bool) -> ParityResult:
    """Parity over every sample; a runtime failure on some sample is a failed check naming that sample."""
    actual = []
    for label, sample in zip(labels, samples):
        try:
            actual.append(runner(sample))
        except Exception as exc:  # onnxruntime / TorchScript runtime errors have many types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if raise_:
                raise CheckFailedError(
                    f"parity check failed: the {fmt} export ({exporter} exporter) fails to run on {label}: {first[:300]}",
                    hint=f"nothing was written; dynamic dims: {describe_dynamic(signature)}; "
                         + ("try --onnx-exporter dynamo, " if fmt == "onnx" and exporter != "dynamo" else "")
                         + "or fix a dim that need not vary (e.g. ids:int64:16)",
                ) from exc
            return ParityResult(np.inf, np.inf, False, len(samples), request.atol, request.rtol, f"fails to run on {label}")
    return compare(expected, actual, request.atol, request.rtol, labels)
