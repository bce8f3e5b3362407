"""The KServe v2 health and metadata endpoints, read from Triton over gRPC and written as Triton's HTTP front
writes them, so tritonclient.http's is_server_ready, is_model_ready and get_model_metadata work on the gateway.

    GET /v2  /v2/health/live  /v2/health/ready                                  no key
    GET /v2/models/{m}[/versions/{v}]  .../ready                                 scope: predict
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.exceptions import HTTPException
from tritonclient.utils import InferenceServerException

from controlplane.feedback.gateway.auth import require
from controlplane.feedback.gateway.state import state_of
from controlplane.feedback.gateway.v2 import error_body

router = APIRouter(prefix="/v2", tags=["KServe v2"])


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/json")


@router.get("")
async def server_metadata() -> dict:
    return {"name": "mlctl-gateway", "version": "1", "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    return Response(status_code=200 if await state_of(request).upstream.ready() else 400)


@router.get("/models/{model}")
@router.get("/models/{model}/versions/{version}")
async def model_metadata(model: str, request: Request, version: str = "", _: str = Depends(require("predict"))) -> Response:
    import orjson

    upstream = state_of(request).upstream
    try:
        found = await upstream.client.get_model_metadata(model, version)
    except InferenceServerException as exc:
        error = upstream.http_error(exc, model)
        return _json(error_body(str(error.detail)), error.status_code)

    def tensors(items) -> list[dict]:
        return [{"name": t.name, "datatype": t.datatype, "shape": [int(d) for d in t.shape]} for t in items]

    return _json(orjson.dumps({"name": found.name, "versions": list(found.versions), "platform": found.platform,
                               "inputs": tensors(found.inputs), "outputs": tensors(found.outputs)}))


@router.get("/models/{model}/ready")
@router.get("/models/{model}/versions/{version}/ready")
async def model_ready(model: str, request: Request, version: str = "", _: str = Depends(require("predict"))) -> Response:
    try:
        ready = await state_of(request).upstream.client.is_model_ready(model, version)
    except InferenceServerException as exc:
        raise HTTPException(400, str(exc)) from exc
    return Response(status_code=200 if ready else 400)
