"""Triton Python-based backend `pytorch`: serves `platform: "pytorch_libtorch"` models."""

from controlplane.backends.torch_model import TorchScriptModel as TritonPythonModel  # noqa: F401
