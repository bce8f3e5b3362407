"""The gateway: JSON predictions forwarded to Triton over gRPC (async client, one channel reused), a
prediction log, feedback labels, API keys, a body-size limit and Prometheus metrics.

    POST /v1/models/{model}/predict   {"inputs": {"pixels": [[...], ...]}, "version": "2"?}   scope: predict
    POST /v1/feedback                 {"prediction_id": "...", "label": 3} or {"feedback": [...]}   scope: admin
    GET  /healthz, /readyz, /metrics, /openapi.json

This module only wires the parts: config, state, upstream (Triton and canary state), routes (predict,
feedback, ops), the body limit, answers and metrics each have their own module.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from controlplane.defaults import GATEWAY_SHADOW_DRAIN_S
from controlplane.feedback.gateway import feedback, ops, predict
from controlplane.feedback.gateway.body_limit import BodyLimit
from controlplane.feedback.gateway.config import API_KEY_HEADER, GatewayConfig
from controlplane.feedback.gateway.index import PredictionIndex
from controlplane.feedback.gateway.metrics import GatewayMetrics
from controlplane.feedback.gateway.state import GatewayState
from controlplane.feedback.gateway.upstream import Upstream

__all__ = ["API_KEY_HEADER", "GatewayConfig", "create_app"]


def create_app(config: GatewayConfig) -> FastAPI:
    state: GatewayState

    metrics = GatewayMetrics(lambda: state.log_figures())
    state = GatewayState(config, metrics, Upstream(config, metrics), PredictionIndex(config.index_size))

    @asynccontextmanager
    async def lifespan(_app):
        await state.upstream.open()
        if config.log_uri:
            from controlplane.feedback.predlog import PredictionLog
            from controlplane.store import open_store

            state.log = PredictionLog(open_store(config.log_uri), config.flush_rows, config.flush_seconds)
        try:
            yield
        finally:
            await state.drain(GATEWAY_SHADOW_DRAIN_S)
            if state.log is not None:
                state.log.close()  # flushes what is queued: a clean shutdown loses nothing
            await state.upstream.close()

    app = FastAPI(title="mlctl gateway", version="1", description="Predictions through Triton, with logging and feedback.",
                  lifespan=lifespan)
    app.state.gateway = state
    for routes in (ops.router, predict.router, feedback.router):
        app.include_router(routes)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    return app
