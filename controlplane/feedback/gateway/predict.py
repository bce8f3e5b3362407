"""POST /v1/models/{model}/predict: check the inputs, route (stable, canary, shadow), answer, log."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from tritonclient.utils import InferenceServerException

from controlplane.errors import UsageError
from controlplane.feedback.gateway import answer
from controlplane.feedback.gateway.auth import require
from controlplane.feedback.gateway.metrics import UNKNOWN_MODEL
from controlplane.feedback.gateway.state import GatewayState, state_of
from controlplane.feedback.gateway.upstream import ALLOW_NON_FINITE, ModelInfo
from controlplane.model.tensor_io import _from_json, check_inputs
from controlplane.release.canary import CanaryState, canary_model
from controlplane.triton.failures import Failure, classify

router = APIRouter()


@dataclass
class _Labels:
    """The request's metric labels: the model's own name only once Triton knew it."""

    model: str = UNKNOWN_MODEL
    version: str = ""
    status: str = "error"


@router.post("/v1/models/{model}/predict")
async def predict(model: str, request: Request, _: str = Depends(require("predict"))) -> Response:
    gateway = state_of(request)
    started, labels = time.perf_counter(), _Labels()
    try:
        body = await _predict(gateway, model, request, started, labels)
        labels.status = "ok"
        return Response(body, media_type="application/json")
    except HTTPException as exc:
        labels.status = str(exc.status_code)
        raise
    finally:
        gateway.metrics.observe("predict", labels.model, labels.version, labels.status, time.perf_counter() - started)


async def _predict(gateway: GatewayState, model: str, request: Request, started: float, labels: _Labels) -> bytes:
    try:
        body = await request.json()
    except ValueError as exc:
        raise HTTPException(400, f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict) or "inputs" not in body:
        raise HTTPException(422, 'body must be {"inputs": {"<input name>": [[...], ...]}}')
    info = await gateway.upstream.model(model)
    labels.model = model
    arrays = _inputs(model, body["inputs"], info)
    tensors = gateway.upstream.tensors(info.signature, arrays)
    explicit = str(body.get("version") or "")
    canary = None if explicit else await gateway.upstream.canary_of(model)
    result = await _infer(gateway, model, canary, tensors, explicit, request, started)
    labels.version = version = str(result.get_response().model_version)
    outputs = {s.name: result.as_numpy(s.name) for s in info.signature.outputs}
    ids = answer.new_ids(info.signature, arrays)
    data = _answer(gateway, model, version, info, arrays, outputs, ids, started)
    if canary is not None and canary.shadow:
        gateway.spawn(_mirror(gateway, model, canary, info, arrays, tensors, ids))
    return data


def _inputs(model: str, inputs, info: ModelInfo) -> dict[str, np.ndarray]:
    """The request's arrays, checked against the signature; NaN/Inf only where the model accepts them."""
    signature = info.signature
    if info.allow_non_finite and isinstance(inputs, dict):  # strict-JSON clients send NaN as null
        inputs = {name: _nulls_as_nan(value) if _is_float(signature, name) else value for name, value in inputs.items()}
    try:
        arrays = check_inputs(_from_json(inputs, signature.inputs, "inputs"), signature.inputs, signature.max_batch_size, "inputs")
    except UsageError as exc:
        raise HTTPException(422, str(exc)) from exc
    problem = None if info.allow_non_finite else answer.first_non_finite(signature, arrays)
    if problem:
        raise HTTPException(422, f"inputs: {problem}; model {model!r} does not accept NaN or infinity "
                                 f'(a model that does declares the config parameter {ALLOW_NON_FINITE} = "true")')
    return arrays


def _is_float(signature, name: str) -> bool:
    return any(s.name == name and np.dtype(s.dtype).kind == "f" for s in signature.inputs)


def _nulls_as_nan(value):
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return value  # not numbers: the usual checks say what is wrong


async def _infer(gateway: GatewayState, model: str, canary: CanaryState | None, tensors: list, explicit: str, request: Request,
                 started: float):
    target, arm_version = model, explicit
    if canary is not None:
        arm_version = str(canary.stable)
        sticky = request.headers.get("X-Client-Key") if canary.sticky else None
        if not canary.shadow and gateway.router.to_canary(model, canary.weight, sticky):
            target, arm_version = canary_model(model), str(canary.canary)
    try:
        return await gateway.upstream.infer(target, tensors, explicit)
    except InferenceServerException as exc:
        if target == model or classify(exc).kind is not Failure.NOT_FOUND:
            gateway.log_predictions(model, [answer.failure_record(model, arm_version, _ms(started))])
            raise gateway.upstream.http_error(exc, model) from exc
    # the canary ended and was unloaded before this gateway re-read its state: answer from stable
    gateway.upstream.expire_canary(model)
    try:
        return await gateway.upstream.infer(model, tensors)
    except InferenceServerException as again:
        gateway.log_predictions(model, [answer.failure_record(model, str(canary.stable), _ms(started))])
        raise gateway.upstream.http_error(again, model) from again


def _answer(gateway: GatewayState, model: str, version: str, info: ModelInfo, arrays: dict, outputs: dict, ids: list[str],
            started: float) -> bytes:
    """The answer, then its log records: a request whose answer could not be built is logged as an error."""
    latency_ms = _ms(started)
    try:
        data = answer.answer_body(model, version, info.signature, outputs, ids, latency_ms)
        records = answer.log_records(model, version, info.signature, arrays, outputs, ids, latency_ms, "ok")
    except Exception as exc:  # whatever failed, the client gets a 500 and the log an error: not swallowed
        gateway.log_predictions(model, answer.failure_records(model, version, info.signature, arrays, ids, latency_ms, "error"))
        raise HTTPException(500, f"model {model!r} v{version} answered, but its answer could not be built: {exc}") from exc
    gateway.log_predictions(model, records)
    gateway.index.add(ids, model, answer.classes_of(info.signature))
    return data


async def _mirror(gateway: GatewayState, model: str, canary: CanaryState, info: ModelInfo, arrays: dict, tensors: list,
                  ids: list[str]) -> None:
    """Shadow mode: the canary sees the request, the client never sees its answer. Its records carry the ids the
    client got, so feedback labels both arms."""
    started, version = time.perf_counter(), str(canary.canary)
    try:
        result = await gateway.upstream.infer(canary_model(model), tensors)
        outputs = {s.name: result.as_numpy(s.name) for s in info.signature.outputs}
        records = answer.log_records(model, version, info.signature, arrays, outputs, ids, _ms(started), "shadow-ok")
    except (InferenceServerException, ValueError, TypeError, IndexError):  # the canary's error: the judge counts it
        records = answer.failure_records(model, version, info.signature, arrays, ids, _ms(started), "shadow-error")
    gateway.log_predictions(model, records)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
