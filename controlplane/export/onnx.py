"""ONNX export with either of torch's exporters, and an onnxruntime runner for the parity check.

Measured with torch 2.13 / onnxruntime on this project's machines (see README, "Exporting transformers"):
- the classic exporter (`dynamo=False`) bakes the traced sequence length into a Reshape inside
  `nn.MultiheadAttention`, so a transformer encoder fails at any other length, fast path on or off;
- the dynamo exporter keeps it symbolic, but only when traced with a batch and lengths of at least 2: traced on
  a batch of 1 it specialises the batch (0/1 specialisation), and onnxruntime's fused SkipLayerNormalization then
  refuses any other batch ("last two dimensions of skip needs to be same as input").
So the exporter traces on a sample with batch >= 2 and `auto` tries the fast classic exporter first and falls
back to dynamo when a non-batch dim is dynamic and the classic graph fails or disagrees on some length.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from controlplane.errors import UsageError
from controlplane.model.signature import Signature

EXPORTERS = ("auto", "torchscript", "dynamo")
DYNAMO_MIN_OPSET = 18  # the dynamo exporter writes opset 18 and converts down; start from what it writes


def dynamic_axes(signature: Signature) -> dict[str, dict[int, str]]:
    """Every -1 dim of every tensor (and the batch) as a named dynamic axis."""
    axes: dict[str, dict[int, str]] = {}
    for spec in (*signature.inputs, *signature.outputs):
        named = {0: "batch"} if signature.batched else {}
        offset = 1 if signature.batched else 0
        named.update({i + offset: f"{spec.name}_d{i}" for i, d in enumerate(spec.dims) if d == -1})
        if named:
            axes[spec.name] = named
    return axes


def has_dynamic_length(signature: Signature) -> bool:
    return any(-1 in s.dims for s in signature.inputs)


def describe_dynamic(signature: Signature) -> str:
    names = [f"{s.name} dim {i}" for s in signature.inputs for i, d in enumerate(s.dims) if d == -1]
    return ", ".join(names) if names else "the batch only"


def exporters_to_try(choice: str, signature: Signature) -> tuple[str, ...]:
    """Which exporters `auto` tries, in order (pure)."""
    if choice not in EXPORTERS:
        raise UsageError(f"ONNX exporter {choice!r} is not one of {', '.join(EXPORTERS)}")
    if choice != "auto":
        return (choice,)
    return ("torchscript", "dynamo") if has_dynamic_length(signature) else ("torchscript",)


def export_onnx(model, signature: Signature, example: dict, path: Path, opset: int, exporter: str) -> OnnxRunner:
    """Write `model` as ONNX to `path`; raises UsageError naming the exporter when torch refuses it."""
    import torch

    args = tuple(torch.from_numpy(example[s.name].copy()) for s in signature.inputs)
    dynamo = exporter == "dynamo"
    quiet = io.StringIO()  # the dynamo exporter prints its steps on stdout; the library never prints
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    try:
        torch_logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(path),
                input_names=[s.name for s in signature.inputs],
                output_names=[s.name for s in signature.outputs],
                dynamic_axes=dynamic_axes(signature) or None,
                opset_version=max(opset, DYNAMO_MIN_OPSET) if dynamo else opset,
                dynamo=dynamo,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # exporter errors come in many types; all mean the same to the user
        other = "torchscript" if dynamo else "dynamo"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(
            f"ONNX export with the {exporter} exporter failed: {type(exc).__name__}: {first[:300]}",
            hint=f"try --onnx-exporter {other}; dynamic dims: {describe_dynamic(signature)} "
                 "(fix a dim that need not vary, e.g. ids:int64:16)",
        ) from exc
    finally:
        torch_logger.setLevel(level)
    return OnnxRunner(path, [s.name for s in signature.outputs])


class OnnxRunner:
    """Runs the exported graph in onnxruntime on the CPU with the graph optimisations serving uses (all)."""

    def __init__(self, path: Path, output_names: Sequence[str]) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 4  # a failed run is reported by the parity check, not logged twice
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's load errors have several types
            raise UsageError(f"onnxruntime cannot load the exported graph: {exc}", hint="try the other --onnx-exporter") from exc
        self.output_names = list(output_names)
        self.input_names = {i.name for i in self.session.get_inputs()}

    def __call__(self, sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # the exporter drops inputs the graph does not use; feed only what it kept
        feeds = {k: v for k, v in sample.items() if k in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
