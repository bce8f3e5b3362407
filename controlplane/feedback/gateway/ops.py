"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from controlplane.feedback.gateway.state import state_of

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    ready = await state_of(request).upstream.ready()
    return Response('{"ready": %s}' % ("true" if ready else "false"), status_code=200 if ready else 503,
                    media_type="application/json")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = state_of(request).metrics.render()
    return Response(body, media_type=content_type)
