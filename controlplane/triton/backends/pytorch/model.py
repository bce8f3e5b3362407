"""Triton Python-based backend `pytorch`: serves `platform: "pytorch_libtorch"` models."""

from controlplane.triton.backends.torch_model import (
    TorchScriptModel as TritonPythonModel,  # noqa: F401
)
