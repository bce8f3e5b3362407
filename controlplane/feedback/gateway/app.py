"""The gateway: predictions forwarded to Triton over gRPC with raw tensor bytes, a prediction log, feedback
labels, API keys, a body-size limit and Prometheus metrics.

    POST /v1/models/{model}/predict                {"inputs": {"pixels": [[...], ...]}, "version": "2"?}   scope: predict
    POST /v2/models/{model}[/versions/{v}]/infer   KServe v2 / Triton HTTP, binary tensors too            scope: predict
    GET  /v2/..., /v2/models/{model}[/ready]       KServe v2 health and metadata
    POST /v1/feedback                              {"prediction_id": "...", "label": 3} or {"feedback": [...]}   scope: admin
    GET  /healthz, /readyz, /metrics, /openapi.json

This module only wires the parts: the inference routes are served by the plain ASGI front (front.py); the
rest by a FastAPI app behind it. Each worker of `--workers N` builds its own (create_app_from_environment).
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI

from controlplane.defaults import GATEWAY_SHADOW_DRAIN_S
from controlplane.feedback.gateway import feedback, ops, v2meta
from controlplane.feedback.gateway.auth import Guard
from controlplane.feedback.gateway.body_limit import BodyLimit
from controlplane.feedback.gateway.config import API_KEY_HEADER, GatewayConfig
from controlplane.feedback.gateway.front import Front
from controlplane.feedback.gateway.index import PredictionIndex
from controlplane.feedback.gateway.metrics import GatewayMetrics
from controlplane.feedback.gateway.security_events import repository_events
from controlplane.feedback.gateway.state import GatewayState
from controlplane.feedback.gateway.upstream import Upstream

__all__ = ["API_KEY_HEADER", "GatewayConfig", "config_environment", "create_app", "create_app_from_environment"]

CONFIG_VARIABLE = "MLCTL_GATEWAY_WORKER_CONFIG"  # the settings, as JSON, for worker processes


def create_app(config: GatewayConfig) -> Front:
    state: GatewayState

    metrics = GatewayMetrics(lambda: state.log_figures(), repository_events(config.repository))
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
    app.state.guard = Guard(config, metrics)  # keys and per-key limits, for the front and the FastAPI routes alike
    for routes in (ops.router, feedback.router, v2meta.router):
        app.include_router(routes)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    _document_front(app)
    return Front(state, app)


def config_environment(config: GatewayConfig) -> dict[str, str]:
    """The environment a worker process reads its settings from."""
    data = asdict(config)
    data["predict_keys"], data["admin_keys"] = sorted(config.predict_keys), sorted(config.admin_keys)
    return {CONFIG_VARIABLE: json.dumps(data)}


def create_app_from_environment() -> Front:
    """A worker's app (uvicorn's factory), from the settings its parent put in the environment."""
    data = json.loads(os.environ[CONFIG_VARIABLE])
    data["predict_keys"], data["admin_keys"] = frozenset(data["predict_keys"]), frozenset(data["admin_keys"])
    return create_app(GatewayConfig(**data))


def _document_front(app: FastAPI) -> None:
    """The front's routes in the OpenAPI document (they are served before FastAPI sees the request)."""
    base = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = base()
            key = [{"name": API_KEY_HEADER, "in": "header", "required": True, "schema": {"type": "string"}}]
            schema["paths"]["/v1/models/{model}/predict"] = {"post": {
                "summary": 'Predict: {"inputs": {"<input>": [[...]]}, "version"?}; answers predictions with ids',
                "parameters": key, "responses": {"200": {"description": "predictions"}}}}
            schema["paths"]["/v2/models/{model}/infer"] = {"post": {
                "summary": "KServe v2 inference (JSON or binary tensors); prediction ids in the answer's parameters",
                "parameters": key, "responses": {"200": {"description": "outputs"}}}}
        return base()

    app.openapi = openapi
