"""The gateway: JSON predictions forwarded to Triton over gRPC (async client, one channel reused), a
prediction log, feedback labels, API keys, a body-size limit and Prometheus metrics.

    POST /v1/models/{model}/predict   {"inputs": {"pixels": [[...], ...]}, "version": "2"?}   scope: predict
    POST /v1/feedback                 {"prediction_id": "...", "label": 3} or {"feedback": [...]}   scope: admin
    GET  /healthz, /readyz, /metrics, /openapi.json
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader

from controlplane.errors import UsageError
from controlplane.model import config as model_config
from controlplane.model.signature import Signature, wire_type
from controlplane.model.tensor_io import _from_json, check_inputs
from controlplane.release.canary import CanaryState, CanaryStore, Router, canary_model

API_KEY_HEADER = "X-API-Key"
CONFIG_TTL_S = 30.0


@dataclass
class GatewayConfig:
    triton_url: str  # gRPC host:port
    predict_keys: frozenset[str] = frozenset()
    admin_keys: frozenset[str] = frozenset()  # feedback and admin; also allowed to predict
    max_body_bytes: int = 1 << 20
    log_uri: str | None = None  # local folder or s3://bucket/prefix; None: no prediction log
    flush_rows: int = 1000
    flush_seconds: float = 2.0
    repository: str | None = None  # where canary state is read from (None: no canaries)
    canary_ttl_s: float = 1.0
    extra: dict = field(default_factory=dict)


class _BodyLimit:
    """ASGI middleware: 413 for a body over the limit, whether announced by Content-Length or streamed."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _reject(send, self.limit)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _reject(send, self.limit)


class _TooLarge(Exception):
    pass


async def _reject(send, limit: int) -> None:
    import json

    body = json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def create_app(config: GatewayConfig):
    import tritonclient.grpc.aio as grpcclient
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )
    from tritonclient.utils import InferenceServerException

    registry = CollectorRegistry()
    requests_total = Counter("mlctl_gateway_requests", "Gateway requests", ["route", "model", "version", "status"], registry=registry)
    latency = Histogram("mlctl_gateway_request_duration_seconds", "Gateway request time", ["route", "model", "version"],
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=registry)
    dropped = Gauge("mlctl_gateway_log_dropped", "Log records dropped (queue full or write failed)", registry=registry)
    state: dict[str, Any] = {"configs": {}, "canaries": {}, "tasks": set()}
    router = Router()

    @asynccontextmanager
    async def lifespan(_app):
        state["client"] = grpcclient.InferenceServerClient(config.triton_url)
        if config.log_uri:
            from controlplane.feedback.predlog import PredictionLog
            from controlplane.store import open_store

            state["log"] = PredictionLog(open_store(config.log_uri), config.flush_rows, config.flush_seconds)
        try:
            yield
        finally:
            if "log" in state:
                state["log"].close()  # flushes what is queued: a clean shutdown loses nothing
            await state["client"].close()

    app = FastAPI(title="mlctl gateway", version="1", description="Predictions through Triton, with logging and feedback.",
                  lifespan=lifespan)
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def require(scope: str):
        allowed = config.admin_keys | (config.predict_keys if scope == "predict" else frozenset())

        async def check(key: str | None = Depends(key_header)) -> str:  # async: no thread hop per request
            if not key:
                raise HTTPException(401, f"missing {API_KEY_HEADER} header")
            if key not in allowed:
                raise HTTPException(403, f"this key may not {scope}")
            return key

        return check

    async def canary_of(model: str) -> CanaryState | None:
        """The model's running canary, re-read from the repository at most every canary_ttl_s."""
        if config.repository is None:
            return None
        cached = state["canaries"].get(model)
        if cached and time.monotonic() - cached[1] < config.canary_ttl_s:
            return cached[0]
        import asyncio

        from controlplane.store import open_store

        def read():
            try:
                found, _ = CanaryStore(open_store(config.repository)).load(model)
            except Exception:  # an unreadable state must not fail predictions: no canary routing
                return None
            return found if found is not None and found.status == "running" else None

        canary = await asyncio.to_thread(read)
        state["canaries"][model] = (canary, time.monotonic())
        return canary

    def log_failure(model: str, version: str, latency_ms: float, status: str = "error") -> None:
        if "log" in state:
            state["log"].predictions(model).append({
                "prediction_id": uuid.uuid4().hex, "time": datetime.now(timezone.utc), "model": model, "version": version,
                "features": [], "outputs": [], "predicted": None, "latency_ms": latency_ms, "status": status})

    async def signature_of(model: str) -> Signature:
        cached = state["configs"].get(model)
        if cached and time.monotonic() - cached[1] < CONFIG_TTL_S:
            return cached[0]
        try:
            response = await state["client"].get_model_config(model)
        except InferenceServerException as exc:
            _raise_for(exc, model)
        signature = model_config.signature_of(response.config, api=True)
        state["configs"][model] = (signature, time.monotonic())
        return signature

    def _raise_for(exc, model: str):
        message = exc.message() or str(exc)
        lowered = message.lower()
        if "unknown model" in lowered or "not found" in lowered or "not ready" in lowered:
            raise HTTPException(404, f"model {model!r}: {message}")
        if "unavailable" in str(exc.status() or "").lower() or "failed to connect" in lowered:
            raise HTTPException(503, f"Triton at {config.triton_url} is not reachable")
        if "unexpected" in lowered or "shape" in lowered or "datatype" in lowered:
            raise HTTPException(400, message)
        raise HTTPException(502, f"Triton failed the request: {message}")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            ready = await state["client"].is_server_ready()
        except InferenceServerException:
            ready = False
        return Response('{"ready": %s}' % ("true" if ready else "false"), status_code=200 if ready else 503,
                        media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        if "log" in state:
            dropped.set(state["log"].dropped)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/models/{model}/predict")
    async def predict(model: str, request: Request, _: str = Depends(require("predict"))) -> JSONResponse:
        started = time.perf_counter()
        status, version = "error", ""
        try:
            try:
                body = await request.json()
            except ValueError as exc:
                raise HTTPException(400, f"body is not JSON: {exc}") from exc
            if not isinstance(body, dict) or "inputs" not in body:
                raise HTTPException(422, 'body must be {"inputs": {"<input name>": [[...], ...]}}')
            signature = await signature_of(model)
            try:
                arrays = check_inputs(_from_json(body["inputs"], signature.inputs, "inputs"), signature.inputs,
                                      signature.max_batch_size, "inputs")
            except UsageError as exc:
                raise HTTPException(422, str(exc)) from exc
            tensors = []
            for spec in signature.inputs:
                tensor = grpcclient.InferInput(spec.name, list(arrays[spec.name].shape), wire_type(spec.dtype))
                tensor.set_data_from_numpy(arrays[spec.name])
                tensors.append(tensor)
            explicit = str(body.get("version") or "")
            canary = None if explicit else await canary_of(model)
            target, arm_version = model, explicit
            if canary is not None:
                arm_version = str(canary.stable)
                if not canary.shadow and router.to_canary(model, canary.weight, request.headers.get("X-Client-Key") if canary.sticky else None):
                    target, arm_version = canary_model(model), str(canary.canary)
            try:
                result = await state["client"].infer(target, tensors, model_version=explicit)
            except InferenceServerException as exc:
                gone = target != model and "unknown model" in (exc.message() or "").lower()
                if not gone:
                    log_failure(model, arm_version, (time.perf_counter() - started) * 1000)
                    _raise_for(exc, model)
                # the canary ended and was unloaded before this gateway re-read its state: answer from stable
                state["canaries"].pop(model, None)
                try:
                    result = await state["client"].infer(model, tensors)
                except InferenceServerException as again:
                    log_failure(model, str(canary.stable), (time.perf_counter() - started) * 1000)
                    _raise_for(again, model)
            if canary is not None and canary.shadow:
                task = asyncio.ensure_future(mirror(model, canary, tensors))
                state["tasks"].add(task)
                task.add_done_callback(state["tasks"].discard)
            version = str(result.get_response().model_version)
            outputs = {s.name: result.as_numpy(s.name) for s in signature.outputs}
            response = _answer(model, version, signature, arrays, outputs, (time.perf_counter() - started) * 1000, state.get("log"))
            status = "ok"
            return JSONResponse(response)  # plain JSON types already: skip FastAPI's per-element encoder
        except HTTPException as exc:
            status = str(exc.status_code)
            raise
        finally:
            requests_total.labels("predict", model, version, status).inc()
            latency.labels("predict", model, version).observe(time.perf_counter() - started)

    async def mirror(model: str, canary: CanaryState, tensors) -> None:
        """Shadow mode: the canary sees the request, the client never sees the canary's answer."""
        started = time.perf_counter()
        try:
            await state["client"].infer(canary_model(model), tensors)
            log_failure(model, str(canary.canary), (time.perf_counter() - started) * 1000, "shadow-ok")
        except InferenceServerException:
            log_failure(model, str(canary.canary), (time.perf_counter() - started) * 1000, "shadow-error")

    @app.post("/v1/feedback", status_code=202)
    async def feedback(request: Request, _: str = Depends(require("admin"))) -> dict:
        try:
            body = await request.json()
        except ValueError as exc:
            raise HTTPException(400, f"body is not JSON: {exc}") from exc
        items = body.get("feedback", [body]) if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise HTTPException(422, 'body must be {"prediction_id": ..., "label": ...} or {"feedback": [...]}')
        now = datetime.now(timezone.utc)
        records = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("prediction_id"), str):
                raise HTTPException(422, "each feedback needs a string prediction_id")
            label = item.get("label")
            if isinstance(label, bool) or not isinstance(label, int):
                raise HTTPException(422, f"label of {item['prediction_id']!r} must be an integer class")
            records.append({"prediction_id": item["prediction_id"], "time": now, "label": label})
        if "log" in state:
            for record in records:
                state["log"].feedback.append(record)
        requests_total.labels("feedback", "", "", "ok").inc()
        return {"accepted": len(records)}

    app.add_middleware(_BodyLimit, limit=config.max_body_bytes)
    return app


def _answer(model: str, version: str, signature: Signature, arrays: dict, outputs: dict, latency_ms: float, log) -> dict:
    batch = next(iter(arrays.values())).shape[0] if signature.batched else 1
    classifier = len(signature.outputs) == 1 and len(signature.outputs[0].dims) == 1 and signature.outputs[0].dims[0] > 1 \
        and signature.outputs[0].dtype.startswith("float")
    first_input = signature.inputs[0].name
    now = datetime.now(timezone.utc)
    predictions = []
    writer = log.predictions(model) if log is not None else None
    for row in range(batch):
        prediction_id = uuid.uuid4().hex
        values = {name: (out[row] if signature.batched else out) for name, out in outputs.items()}
        entry: dict = {"prediction_id": prediction_id, "outputs": {k: v.tolist() for k, v in values.items()}}
        predicted = None
        if classifier:
            scores = next(iter(values.values()))
            predicted = int(np.argmax(scores))
            entry["predicted_class"] = predicted
            entry["probabilities"] = scores.tolist()
        predictions.append(entry)
        if writer is not None:
            features = arrays[first_input][row] if signature.batched else arrays[first_input]
            writer.append({
                "prediction_id": prediction_id, "time": now, "model": model, "version": version,
                "features": np.asarray(features, dtype=float).ravel().tolist(),
                "outputs": np.asarray(next(iter(values.values())), dtype=float).ravel().tolist(),
                "predicted": predicted, "latency_ms": latency_ms, "status": "ok",
            })
    return {"model": model, "version": version, "latency_ms": round(latency_ms, 3), "predictions": predictions}
