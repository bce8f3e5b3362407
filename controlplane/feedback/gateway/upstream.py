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

from controlplane.defaults import GATEWAY_CONFIG_TTL_S
from controlplane.errors import MlctlError
from controlplane.feedback.gateway.config import GatewayConfig
from controlplane.feedback.gateway.metrics import GatewayMetrics
from controlplane.model import config as model_config
from controlplane.model.signature import Signature, wire_type
from controlplane.release.canary import CanaryState, CanaryStore
from controlplane.triton.failures import Failure, classify

logger = logging.getLogger(__name__)

ALLOW_NON_FINITE = "mlctl.allow_non_finite"  # model config parameter: "true" lets NaN/Inf inputs through
_HTTP_STATUS = {Failure.NOT_FOUND: 404, Failure.UNREACHABLE: 503, Failure.BAD_REQUEST: 400}


@dataclass(frozen=True)
class ModelInfo:
    signature: Signature  # as clients send and receive it
    allow_non_finite: bool


def model_info(config) -> ModelInfo:
    """What the gateway needs from a Triton model config (pure)."""
    parameter = config.parameters.get(ALLOW_NON_FINITE)
    allowed = parameter is not None and parameter.string_value.strip().lower() == "true"
    return ModelInfo(model_config.signature_of(config, api=True), allowed)


class Upstream:
    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.triton_url, self.repository, self.canary_ttl_s = config.triton_url, config.repository, config.canary_ttl_s
        self.metrics = metrics
        self.client = None
        self._models: dict[str, tuple[ModelInfo, float]] = {}
        self._canaries: dict[str, tuple[CanaryState | None, float]] = {}

    async def open(self) -> None:
        import tritonclient.grpc.aio as grpcclient

        self.client = grpcclient.InferenceServerClient(self.triton_url)  # one channel, reused by every request

    async def close(self) -> None:
        if self.client is not None:
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

    @staticmethod
    def tensors(signature: Signature, arrays: dict[str, np.ndarray]) -> list:
        import tritonclient.grpc.aio as grpcclient

        tensors = []
        for spec in signature.inputs:
            tensor = grpcclient.InferInput(spec.name, list(arrays[spec.name].shape), wire_type(spec.dtype))
            tensor.set_data_from_numpy(arrays[spec.name])
            tensors.append(tensor)
        return tensors

    async def infer(self, model: str, tensors: list, version: str = ""):
        return await self.client.infer(model, tensors, model_version=version)

    def http_error(self, exc: InferenceServerException, model: str) -> HTTPException:
        failure = classify(exc)
        status = _HTTP_STATUS.get(failure.kind, 502)
        if status == 404:
            return HTTPException(404, f"model {model!r}: {failure.message}")
        if status == 503:
            return HTTPException(503, f"Triton at {self.triton_url} is not reachable")
        if status == 400:
            return HTTPException(400, failure.message)
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
