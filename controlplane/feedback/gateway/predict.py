"""POST /v1/models/{model}/predict, the simple JSON route for curl users: {"inputs": {"pixels": [[...], ...]},
"version": "2"?} in, {"predictions": [{"prediction_id", "outputs", "predicted_class"?, "probabilities"?}]} out."""

from __future__ import annotations

import numpy as np
from starlette.exceptions import HTTPException

from controlplane.errors import UsageError
from controlplane.feedback.gateway import answer
from controlplane.feedback.gateway.forward import Labels, answered, checked, forward
from controlplane.feedback.gateway.state import GatewayState
from controlplane.feedback.gateway.upstream import ModelInfo
from controlplane.feedback.gateway.v2 import Tensor, loads
from controlplane.model.signature import wire_type
from controlplane.model.tensor_io import _from_json

ROUTE = "predict"


async def handle(gateway: GatewayState, model: str, body: bytes, client_key: str | None, started: float,
                 labels: Labels) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    data = loads(body, "body")
    if not isinstance(data, dict) or "inputs" not in data:
        raise HTTPException(422, 'body must be {"inputs": {"<input name>": [[...], ...]}}')
    info = await gateway.upstream.model(model)
    labels.model = model
    arrays = checked(model, info, _inputs(data["inputs"], info), 422)
    tensors = tuple(Tensor(spec.name, wire_type(spec.dtype), arrays[spec.name].shape, arrays[spec.name].tobytes())
                    for spec in info.signature.inputs)
    explicit = str(data.get("version") or "")
    version, outputs, ids = await forward(gateway, model, info, tensors, arrays, explicit, client_key, started)
    labels.version = version
    answer_bytes = answered(gateway, model, version, info, arrays, outputs, ids, started,
                            lambda out, latency_ms: answer.answer_body(model, version, info.signature, out, ids, latency_ms))
    return answer_bytes, [(b"content-type", b"application/json")]


def _inputs(inputs, info: ModelInfo) -> dict[str, np.ndarray]:
    """JSON values as arrays of the model's dtypes; strict-JSON clients send NaN as null where the model allows it."""
    signature = info.signature
    if info.allow_non_finite and isinstance(inputs, dict):
        inputs = {name: _nulls_as_nan(value) if _is_float(signature, name) else value for name, value in inputs.items()}
    try:
        return _from_json(inputs, signature.inputs, "inputs")
    except UsageError as exc:
        raise HTTPException(422, str(exc)) from exc


def _is_float(signature, name: str) -> bool:
    return any(s.name == name and np.dtype(s.dtype).kind == "f" for s in signature.inputs)


def _nulls_as_nan(value):
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return value  # not numbers: the usual checks say what is wrong
