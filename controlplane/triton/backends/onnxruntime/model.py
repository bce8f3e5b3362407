"""Triton Python-based backend `onnxruntime`: serves `platform: "onnxruntime_onnx"` models."""

from controlplane.triton.backends.onnx_model import OnnxModel as TritonPythonModel  # noqa: F401
