"""The hot path both protocols share: check the inputs against the served config, route (stable, canary, shadow),
ask Triton with raw tensor bytes, then log the answer's rows and remember its ids.

    checked(...)    names, dtypes, shapes, max batch and non-finite values, against the model's config
    forward(...)    route and infer: (version, outputs)
    answered(...)   build the client's answer, then log it (an answer that cannot be built is logged as an error)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from starlette.exceptions import HTTPException
from tritonclient.utils import InferenceServerException

from controlplane.defaults import GATEWAY_RETRY_AFTER_S
from controlplane.errors import UsageError
from controlplane.feedback.gateway import answer
from controlplane.feedback.gateway.metrics import UNKNOWN_MODEL
from controlplane.feedback.gateway.state import GatewayState
from controlplane.feedback.gateway.upstream import ALLOW_NON_FINITE, ModelInfo
from controlplane.feedback.gateway.v2 import Tensor
from controlplane.model.tensor_io import check_inputs
from controlplane.release.canary import CanaryState, canary_model
from controlplane.triton.failures import Failure, classify

T = TypeVar("T")
_ALL = np.logical_and.reduce


@dataclass
class Labels:
    """The request's metric labels: the model's own name only once Triton knew it."""

    model: str = UNKNOWN_MODEL
    version: str = ""
    status: str = "error"


def checked(model: str, info: ModelInfo, arrays: dict[str, np.ndarray], status: int, fit: bool | None = None) -> dict[str, np.ndarray]:
    """The arrays in the model's input order; HTTP `status` for inputs that do not fit the served config. `fit`:
    whether fits(info, arrays) holds, when the caller knows."""
    signature = info.signature
    if not (fits(info, arrays) if fit is None else fit):  # the full check, for its conversions and its message
        try:
            arrays = check_inputs(arrays, signature.inputs, signature.max_batch_size, "inputs")
        except UsageError as exc:
            raise HTTPException(status, str(exc)) from exc
    # two C calls per floating input, neither releasing the GIL for a small input (a dot product would, and
    # could then wait for the log writer's thread); where one is not finite, the full search for the message
    if not info.allow_non_finite and not all(_ALL(np.isfinite(arrays[name]), axis=None) for name in info.float_inputs):
        problem = answer.first_non_finite(signature, arrays)
        if problem:
            raise HTTPException(status, f"inputs: {problem}; model {model!r} does not accept NaN or infinity "
                                        f'(a model that does declares the config parameter {ALLOW_NON_FINITE} = "true")')
    return arrays


def fits(info: ModelInfo, arrays: dict[str, np.ndarray]) -> bool:
    """Whether the arrays are the model's inputs in order, with their dtypes and shapes, contiguous, one batch size
    within the limit: what check_inputs would pass unchanged, found without building anything."""
    if len(arrays) != len(info.inputs) or list(arrays) != [name for name, _ in info.inputs]:
        return False
    signature = info.signature
    batched, rows = signature.batched, None
    for (name, dtype), spec in zip(info.inputs, signature.inputs):
        array = arrays[name]
        if array.dtype != dtype or not array.flags.c_contiguous or not spec.matches_shape(array.shape, batched):
            return False
        if batched and rows is not None and array.shape[0] != rows:
            return False
        rows = array.shape[0] if batched else None
    return not batched or rows <= signature.max_batch_size


async def forward(gateway: GatewayState, model: str, info: ModelInfo, tensors: tuple[Tensor, ...], arrays: dict, explicit: str,
                  sticky_key: str | None, started: float, parameters: dict | None = None) -> tuple[str, list[Tensor], list[str]]:
    """(the version that answered, its outputs, one new prediction id per row); a shadow canary sees it too."""
    canary = None if explicit else await gateway.upstream.canary_of(model)
    target, arm_version = model, explicit
    if canary is not None:
        arm_version = str(canary.stable)
        if not canary.shadow and gateway.router.to_canary(model, canary.weight, sticky_key if canary.sticky else None):
            target, arm_version = canary_model(model), str(canary.canary)
    limit = gateway.config.max_in_flight
    busy = gateway.in_flight.get(model, 0)
    if limit and busy >= limit:  # admission control: refused at once, before Triton queues it
        raise HTTPException(429, f"model {model!r} is overloaded ({busy} requests in flight at this gateway worker, the "
                                 f"limit is {limit}); retry after {GATEWAY_RETRY_AFTER_S} s",
                            headers={"Retry-After": str(GATEWAY_RETRY_AFTER_S)})
    gateway.in_flight[model] = busy + 1
    try:
        version, outputs = await gateway.upstream.infer(target, tensors, explicit, parameters,
                                                        info.group_rows if target == model else None)
    except InferenceServerException as exc:
        if target == model or classify(exc).kind is not Failure.NOT_FOUND:
            gateway.log_predictions(model, answer.failure_rows(model, arm_version, ms_since(started)))
            raise gateway.upstream.http_error(exc, model) from exc
        # the canary ended and was unloaded before this gateway re-read its state: answer from stable
        gateway.upstream.expire_canary(model)
        try:
            version, outputs = await gateway.upstream.infer(model, tensors, "", parameters)
        except InferenceServerException as again:
            gateway.log_predictions(model, answer.failure_rows(model, str(canary.stable), ms_since(started)))
            raise gateway.upstream.http_error(again, model) from again
    finally:
        gateway.in_flight[model] -= 1
    ids = gateway.ids.take(answer.rows_of(info.signature, arrays))
    if canary is not None and canary.shadow:
        gateway.spawn(_mirror(gateway, model, canary, info, arrays, tensors, ids, parameters))
    return version, outputs, ids


def answered(gateway: GatewayState, model: str, version: str, info: ModelInfo, arrays: dict, outputs: list[Tensor],
             ids: list[str], started: float, build: Callable[[dict[str, np.ndarray], float], T]) -> T:
    """`build(output arrays, latency_ms)`, then the rows logged and the ids remembered; a build that fails is
    logged as an error and answered 500 (not swallowed)."""
    latency_ms = ms_since(started)
    try:
        out = {t.name: t.array() for t in outputs}
        result = build(out, latency_ms)
        rows = answer.log_rows(model, version, info.signature, arrays, out, ids, latency_ms, "ok")
    except Exception as exc:  # whatever failed, the client gets a 500 and the log an error
        gateway.log_predictions(model, answer.log_rows(model, version, info.signature, arrays, None, ids, latency_ms, "error"))
        raise HTTPException(500, f"model {model!r} v{version} answered, but its answer could not be built: {exc}") from exc
    gateway.log_predictions(model, rows)
    gateway.index.add(ids, model, info.classes)
    return result


async def _mirror(gateway: GatewayState, model: str, canary: CanaryState, info: ModelInfo, arrays: dict,
                  tensors: tuple[Tensor, ...], ids: list[str], parameters: dict | None) -> None:
    """Shadow mode: the canary sees the request, the client never sees its answer. Its rows carry the ids the
    client got, so feedback labels both arms."""
    started, version = time.perf_counter(), str(canary.canary)
    signature = info.signature
    try:
        _, outputs = await gateway.upstream.infer(canary_model(model), tensors, "", parameters)
        out = {t.name: t.array() for t in outputs}
        rows = answer.log_rows(model, version, signature, arrays, out, ids, ms_since(started), "shadow-ok")
    except (InferenceServerException, ValueError, TypeError, KeyError):  # the canary's error: the judge counts it
        rows = answer.log_rows(model, version, signature, arrays, None, ids, ms_since(started), "shadow-error")
    gateway.log_predictions(model, rows)


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
