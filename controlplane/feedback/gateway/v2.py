"""The KServe v2 / Triton HTTP inference protocol (pure): requests in, answers out.

A request is a JSON header, optionally followed by binary tensor data (the binary tensor data extension: the
header's length in `Inference-Header-Content-Length`, each input's `binary_data_size` in its parameters).
Binary inputs are never decoded to Python values: they become numpy views over the body, checked by shape,
datatype and byte count, and travel to Triton as the bytes they arrived as. Answers are written the same way:
binary outputs are Triton's own bytes, JSON outputs flat lists (NaN and infinities as null).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import orjson
from starlette.exceptions import HTTPException

from controlplane.errors import UsageError
from controlplane.model.signature import numpy_dtype_of_triton

HEADER_LENGTH = "inference-header-content-length"
IDS_PARAMETER = "mlctl_prediction_ids"  # the answer's parameters: one prediction id per row, comma-separated
_CLIENT_PARAMETERS = ("binary_data_output",)  # the gateway's own; the rest go to Triton as they came


class Tensor(NamedTuple):  # a named tuple: made several times per request, cheaper than a frozen dataclass
    name: str
    datatype: str  # Triton's wire name: FP32, INT64, BOOL...
    shape: tuple[int, ...]
    data: bytes  # row-major, as Triton's raw contents have it

    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=dtype_of(self.datatype)).reshape(self.shape)


class InferRequest(NamedTuple):
    id: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[tuple[str, bool], ...]  # requested (name, binary); empty: every output
    binary_output: bool  # for outputs the request does not name
    parameters: dict  # passed on to Triton
    layout: Layout | None  # the header's parse, shared by every request that sends the same header


class Layout:
    """A request header, parsed and checked once: everything but the binary tensors' bytes. A client sends the
    same header for the same shapes, so the gateway keeps it (LAYOUT_LIMIT of them, each at most
    LAYOUT_MAX_BYTES) and a request whose header it has seen costs a dict lookup and a slice per tensor.
    `fits` is the model config (ModelInfo) these inputs were last found to fit, so the check runs once per config."""

    __slots__ = ("id", "inputs", "outputs", "binary_output", "parameters", "cacheable", "fits")

    def __init__(self, id: str, inputs: tuple, outputs: tuple[tuple[str, bool], ...], binary_output: bool,
                 parameters: dict) -> None:
        self.id, self.outputs, self.binary_output, self.parameters = id, outputs, binary_output, parameters
        self.inputs = inputs  # (name, datatype, shape, binary byte count or None, the JSON data's bytes or None)
        self.cacheable = all(data is None for *_, data in inputs)  # JSON data lives in the header: not worth keeping
        self.fits = None

    def request(self, body: bytes, offset: int) -> InferRequest:
        """The request whose binary data starts at `offset` of `body`; its byte counts checked."""
        tensors, start = [], offset
        for name, datatype, shape, size, data in self.inputs:
            if data is None:
                if offset + size > len(body):
                    raise HTTPException(400, f"input {name!r}: its {size} bytes run past the end of the body")
                data, offset = body[offset:offset + size], offset + size
            tensors.append(Tensor(name, datatype, shape, data))
        if offset != len(body):
            raise HTTPException(400, f"the binary data holds {len(body) - start} bytes but the inputs' binary_data_size "
                                     f"add up to {offset - start}")
        return InferRequest(self.id, tuple(tensors), self.outputs, self.binary_output, self.parameters, self)


LAYOUT_LIMIT, LAYOUT_MAX_BYTES = 1024, 4096
_LAYOUTS: dict[bytes, Layout] = {}
_DTYPES: dict[str, np.dtype] = {}  # Triton's wire name -> numpy dtype, filled as met (a handful of names)


def dtype_of(datatype: str) -> np.dtype:
    dtype = _DTYPES.get(datatype)
    if dtype is not None:
        return dtype
    try:
        dtype = np.dtype(numpy_dtype_of_triton(f"TYPE_{datatype}"))
    except UsageError:
        raise HTTPException(400, f"datatype {datatype!r} is not supported by this gateway "
                                 "(BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, FP32, FP64)") from None
    _DTYPES[datatype] = dtype
    return dtype


def parse_request(body: bytes, header_length: int | None) -> InferRequest:
    """The request's tensors, their byte counts checked against their shapes and datatypes."""
    if header_length is None:
        return parse_header(loads(body, "the request header")).request(body, len(body))
    if not 0 < header_length <= len(body):
        raise HTTPException(400, f"Inference-Header-Content-Length {header_length} is outside the body ({len(body)} bytes)")
    header = body[:header_length]
    layout = _LAYOUTS.get(header)
    if layout is None:
        layout = parse_header(loads(header, "the request header"))
        if layout.cacheable and header_length <= LAYOUT_MAX_BYTES:
            if len(_LAYOUTS) >= LAYOUT_LIMIT:
                _LAYOUTS.clear()
            _LAYOUTS[header] = layout
    return layout.request(body, header_length)


def parse_header(header) -> Layout:
    """A request header's layout, every field checked (pure)."""
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise HTTPException(400, 'the request must be a JSON object with a non-empty "inputs" list')
    parameters = header.get("parameters") or {}
    return Layout(str(header.get("id", "")), tuple(_input(item) for item in header["inputs"]), _requested(header.get("outputs")),
                  bool(parameters.get("binary_data_output", False)),
                  {k: v for k, v in parameters.items() if k not in _CLIENT_PARAMETERS})


def _input(item) -> tuple:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not isinstance(item.get("datatype"), str):
        raise HTTPException(400, "each input needs a name, a datatype and a shape")
    name, shape = item["name"], item.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise HTTPException(400, f"input {name!r}: shape must be a list of non-negative integers")
    dtype = dtype_of(item["datatype"])
    expected = math.prod(shape) * dtype.itemsize
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != expected:
            raise HTTPException(400, f"input {name!r}: binary_data_size is {size} bytes but shape {shape} of "
                                     f"{item['datatype']} takes {expected}")
        return name, item["datatype"], tuple(shape), size, None
    if "data" not in item:
        raise HTTPException(400, f"input {name!r} has neither data nor binary_data_size")
    try:
        array = np.asarray(item["data"], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise HTTPException(400, f"input {name!r}: data is not {item['datatype']}: {exc}") from exc
    if array.size != math.prod(shape):
        raise HTTPException(400, f"input {name!r}: {array.size} values for shape {shape}")
    return name, item["datatype"], tuple(shape), None, array.tobytes()


def _requested(outputs) -> tuple[tuple[str, bool], ...]:
    if outputs is None:
        return ()
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise HTTPException(400, '"outputs" must be a list of {"name": ...}')
    requested = []
    for output in outputs:
        parameters = output.get("parameters") or {}
        unknown = set(parameters) - {"binary_data"}
        if unknown:
            raise HTTPException(400, f"output {output['name']!r}: parameters {sorted(unknown)} are not supported by this "
                                     "gateway (the classification extension is not); ask Triton directly")
        requested.append((output["name"], bool(parameters.get("binary_data", False))))
    return tuple(requested)


def loads(data: bytes, what: str):
    """JSON; NaN and Infinity literals too (the non-finite check, not the parser, refuses them)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    import json

    try:
        return json.loads(data)
    except ValueError as exc:
        raise HTTPException(400, f"{what} is not JSON: {exc}") from exc


def encode_answer(model: str, version: str, request: InferRequest, outputs: list[Tensor],
                  parameters: dict | None = None) -> tuple[bytes, int | None]:
    """The answer's body and, when it carries binary data, the length of its JSON header."""
    wanted = dict(request.outputs) if request.outputs else {t.name: request.binary_output for t in outputs}
    by_name = {t.name: t for t in outputs}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise HTTPException(400, f"model {model!r} has no output {missing[0]!r}; it has {', '.join(by_name)}")
    entries, blobs = [], []
    for name, binary in wanted.items():
        tensor = by_name[name]
        entry: dict = {"name": name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if binary:
            entry["parameters"] = {"binary_data_size": len(tensor.data)}
            blobs.append(tensor.data)
        else:
            entry["data"] = np.frombuffer(tensor.data, dtype=dtype_of(tensor.datatype))
        entries.append(entry)
    header: dict = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id:
        header["id"] = request.id
    if parameters:
        header["parameters"] = parameters
    text = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    return (b"".join([text, *blobs]), len(text)) if blobs else (text, None)


def error_body(message: str) -> bytes:
    """Triton's error shape, which tritonclient reads."""
    return orjson.dumps({"error": message})
