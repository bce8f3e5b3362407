"""Everything the gateway asks of others: Triton (inference, readiness, model configs, cached) and the
repository (canary state, cached). Triton's errors become HTTP errors here, through the one classifier."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
from fastapi import HTTPException
from tritonclient.utils import InferenceServerException

from controlplane.defaults import GATEWAY_CONFIG_TTL_S, GATEWAY_RETRY_AFTER_S
from controlplane.errors import MlctlError
from controlplane.feedback.gateway.answer import classes_of
from controlplane.feedback.gateway.coalesce import Coalescer
from controlplane.feedback.gateway.config import GatewayConfig
from controlplane.feedback.gateway.metrics import GatewayMetrics
from controlplane.feedback.gateway.triton_http import TritonHTTP
from controlplane.feedback.gateway.v2 import Tensor
from controlplane.model import config as model_config
from controlplane.model.signature import Signature
from controlplane.release.canary import CanaryState, CanaryStore
from controlplane.triton.failures import Failure, classify

logger = logging.getLogger(__name__)

ALLOW_NON_FINITE = "mlctl.allow_non_finite"  # model config parameter: "true" lets NaN/Inf inputs through
_HTTP_STATUS = {Failure.NOT_FOUND: 404, Failure.UNREACHABLE: 503, Failure.BAD_REQUEST: 400, Failure.OVERLOADED: 429}


@dataclass(frozen=True)
class ModelInfo:
    signature: Signature  # as clients send and receive it
    allow_non_finite: bool
    # worked out once per config read, not per request: (name, dtype) of each input in order, the floating ones
    # (checked for NaN/Inf), the classifier's number of classes
    inputs: tuple[tuple[str, np.dtype], ...] = ()
    float_inputs: tuple[str, ...] = ()
    classes: int | None = None
    # the most rows of one Triton request made of several clients' (coalesce.py): the max batch size where the
    # config enables dynamic batching (Triton merges requests itself then), else 0
    group_rows: int = 0


def model_info(config) -> ModelInfo:
    """What the gateway needs from a Triton model config (pure)."""
    parameter = config.parameters.get(ALLOW_NON_FINITE)
    allowed = parameter is not None and parameter.string_value.strip().lower() == "true"
    signature = model_config.signature_of(config, api=True)
    inputs = tuple((spec.name, np.dtype(spec.dtype)) for spec in signature.inputs)
    group_rows = signature.max_batch_size if signature.batched and config.HasField("dynamic_batching") else 0
    return ModelInfo(signature, allowed, inputs, tuple(name for name, dtype in inputs if dtype.kind == "f"), classes_of(signature),
                     group_rows)


def _set_parameter(parameter, key: str, value) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, str):
        parameter.string_param = value
    else:
        raise HTTPException(400, f"request parameter {key!r} must be a boolean, an integer or a string")


class Upstream:
    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.triton_url, self.repository, self.canary_ttl_s = config.triton_url, config.repository, config.canary_ttl_s
        self.metrics, self.config = metrics, config
        self.client = None
        self.http = TritonHTTP(config.triton_http_url) if config.triton_http_url else None
        self.coalescer = Coalescer(self._send) if config.coalesce else None
        if self.coalescer is not None:
            metrics.watch_coalescing(self.coalescer.by_model)
        self._models: dict[str, tuple[ModelInfo, float]] = {}
        self._canaries: dict[str, tuple[CanaryState | None, float]] = {}

    async def open(self) -> None:
        import grpc
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.grpc import service_pb2_grpc

        tls = self.config.triton_tls()
        self.client = grpcclient.InferenceServerClient(self.triton_url, **(tls.grpc_kwargs() if tls else {}))  # configs, readiness
        # inference: Triton's own stub on one channel, raw tensor bytes in and out (no InferInput, no as_numpy)
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = (grpc.aio.secure_channel(self.triton_url, tls.channel_credentials(), options=options) if tls
                         else grpc.aio.insecure_channel(self.triton_url, options=options))
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.client is not None:
            await self._channel.close()
            await self.client.close()

    # --- Triton ----------------------------------------------------------------------------------
    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_server_ready())
        except InferenceServerException:
            return False

    async def model(self, name: str) -> ModelInfo:
        """The model's signature and policy, re-read from Triton at most every GATEWAY_CONFIG_TTL_S."""
        cached = self._models.get(name)
        if cached and time.monotonic() - cached[1] < GATEWAY_CONFIG_TTL_S:
            return cached[0]
        try:
            response = await self.client.get_model_config(name)
        except InferenceServerException as exc:
            raise self.http_error(exc, name) from exc
        info = model_info(response.config)
        self._models[name] = (info, time.monotonic())
        return info

    async def infer(self, model: str, tensors: tuple[Tensor, ...], version: str = "",
                    parameters: dict | None = None, group_rows: int | None = None) -> tuple[str, list[Tensor]]:
        """(the version that answered, its outputs); Triton's errors as InferenceServerException. With coalescing on,
        requests without parameters of their own may go to Triton together with others (coalesce.py), up to
        `group_rows` rows (the model's ModelInfo.group_rows; None: looked up here)."""
        if self.coalescer is not None and not parameters:
            limit = await self._group_rows(model) if group_rows is None else group_rows
            if limit:
                return await self.coalescer.infer(model, tensors, version, limit)
        return await self._send(model, tensors, version, parameters)

    async def _group_rows(self, model: str) -> int:
        """How many rows one grouped request to `model` may hold (0: none grouped): its config, as cached."""
        try:
            return (await self.model(model)).group_rows
        except (HTTPException, MlctlError):  # a canary gone, Triton down, a config the gateway cannot read: sent alone
            return 0

    async def _send(self, model: str, tensors: tuple[Tensor, ...], version: str = "",
                    parameters: dict | None = None) -> tuple[str, list[Tensor]]:
        """One Triton request."""
        if self.http is not None:
            return await self.http.infer(model, tensors, version, parameters)
        import grpc
        from tritonclient.grpc import service_pb2
        from tritonclient.grpc._utils import get_error_grpc

        request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
        for tensor in tensors:
            request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        request.raw_input_contents.extend([tensor.data for tensor in tensors])
        for key, value in (parameters or {}).items():
            _set_parameter(request.parameters[key], key, value)
        try:
            response = await self._stub.ModelInfer(request)
        except grpc.aio.AioRpcError as exc:
            raise get_error_grpc(exc) from None
        return response.model_version, [Tensor(o.name, o.datatype, tuple(o.shape), raw)
                                        for o, raw in zip(response.outputs, response.raw_output_contents)]

    def http_error(self, exc: InferenceServerException, model: str) -> HTTPException:
        failure = classify(exc)
        status = _HTTP_STATUS.get(failure.kind, 502)
        if status == 404:
            return HTTPException(404, f"model {model!r}: {failure.message}")
        if status == 503:
            return HTTPException(503, f"Triton at {self.triton_url} is not reachable")
        if status == 400:
            return HTTPException(400, failure.message)
        if status == 429:  # the model's queue policy rejected it at once: the client should back off, not wait
            return HTTPException(429, f"model {model!r} is overloaded ({failure.message}); retry after {GATEWAY_RETRY_AFTER_S} s",
                                 headers={"Retry-After": str(GATEWAY_RETRY_AFTER_S)})
        return HTTPException(502, f"Triton failed the request: {failure.message}")

    # --- canary state ----------------------------------------------------------------------------
    async def canary_of(self, model: str) -> CanaryState | None:
        """The model's running canary, re-read from the repository at most every canary_ttl_s.

        A failed read keeps the last known state (routing must neither stop nor start on a read error),
        warns and counts the failure."""
        if self.repository is None:
            return None
        cached = self._canaries.get(model)
        if cached and time.monotonic() - cached[1] < self.canary_ttl_s:
            return cached[0]
        try:
            canary = await asyncio.to_thread(self._read_canary, model)
        except (MlctlError, OSError, ValueError, KeyError, TypeError) as exc:
            canary = cached[0] if cached else None
            self.metrics.canary_state_errors.labels(model).inc()
            logger.warning("canary state of model %r in %s could not be read (%s: %s); routing keeps the last known state (%s)",
                           model, self.repository, type(exc).__name__, exc,
                           f"canary v{canary.canary} at {canary.weight}%" if canary else "no canary")
        self._canaries[model] = (canary, time.monotonic())
        return canary

    def _read_canary(self, model: str) -> CanaryState | None:
        from controlplane.store import open_store

        found, _ = CanaryStore(open_store(self.repository)).load(model)
        return found if found is not None and found.status == "running" else None

    def expire_canary(self, model: str) -> None:
        """Re-read the canary state on the next request (keeping it as the last known state)."""
        if model in self._canaries:
            self._canaries[model] = (self._canaries[model][0], float("-inf"))
