"""Tensor signatures: names, dtypes and per-sample dims (the batch dimension is implied).

Pure values; no framework imports. Dtypes use numpy names; the Triton names are derived here once.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.errors import UsageError

# numpy dtype name -> Triton model-config data type
_TRITON_TYPES: dict[str, str] = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
_NUMPY_TYPES = {v: k for k, v in _TRITON_TYPES.items()}
# Triton wire names (as in model metadata / infer requests)
_WIRE_TYPES = {k: v.removeprefix("TYPE_") for k, v in _TRITON_TYPES.items()}

SUPPORTED_DTYPES = tuple(_TRITON_TYPES)


def triton_type(dtype: str) -> str:
    return _TRITON_TYPES[dtype]


def wire_type(dtype: str) -> str:
    return _WIRE_TYPES[dtype]


def numpy_dtype_of_triton(triton: str) -> str:
    try:
        return _NUMPY_TYPES[triton]
    except KeyError:
        raise UsageError(f"data type {triton} is not supported by mlctl") from None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    dims: tuple[int, ...]  # per sample, without the batch dimension; -1 is variable

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise UsageError(f"tensor name {self.name!r} must be letters, digits, '_', '-' or '.'")
        if self.dtype not in _TRITON_TYPES:
            raise UsageError(
                f"tensor {self.name!r}: dtype {self.dtype!r} is not supported",
                hint=f"use one of {', '.join(SUPPORTED_DTYPES)}",
            )
        if any(d == 0 or d < -1 for d in self.dims):
            raise UsageError(f"tensor {self.name!r}: dims {list(self.dims)} must be positive or -1")

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "dims": list(self.dims)}

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        return cls(str(data["name"]), str(data["dtype"]), tuple(int(d) for d in data["dims"]))

    def matches_shape(self, shape: tuple[int, ...], batched: bool) -> bool:
        """Whether a full tensor shape (with batch dim when `batched`) fits this spec."""
        expected = self.dims
        if batched:
            if len(shape) != len(expected) + 1 or shape[0] < 1:
                return False
            shape = shape[1:]
        return len(shape) == len(expected) and all(e == -1 or e == s for e, s in zip(expected, shape))

    def describe(self, batched: bool) -> str:
        dims = ["batch"] if batched else []
        dims += ["?" if d == -1 else str(d) for d in self.dims]
        return f"{self.name}: {self.dtype}[{', '.join(dims)}]"


def parse_tensor_spec(text: str) -> TensorSpec:
    """Parse `name:dtype:d1,d2,...` (dims per sample; `-1` for a variable dim; empty for a scalar)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise UsageError(
            f"input spec {text!r} is not name:dtype:dims",
            hint="for example --input pixels:float32:64 or --input tokens:int64:-1",
        )
    name, dtype, dims_text = (p.strip() for p in parts)
    try:
        dims = tuple(int(d) for d in dims_text.split(",") if d.strip()) if dims_text else ()
    except ValueError:
        raise UsageError(f"input spec {text!r}: dims {dims_text!r} must be integers separated by commas") from None
    return TensorSpec(name, dtype, dims)


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 0  # 0: the model takes no batch dimension

    def __post_init__(self) -> None:
        if not self.inputs:
            raise UsageError("a model needs at least one input")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"tensor names must be unique; repeated: {', '.join(duplicates)}")
        if self.max_batch_size < 0:
            raise UsageError("max batch size must be 0 (no batching) or positive")

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def to_dict(self) -> dict:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "max_batch_size": self.max_batch_size,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
            max_batch_size=int(data.get("max_batch_size", 0)),
        )
