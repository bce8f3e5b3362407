"""API keys: a FastAPI dependency per scope (predict, admin); admin keys may also predict."""

from __future__ import annotations

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from controlplane.feedback.gateway.config import API_KEY_HEADER

_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


def require(scope: str):
    async def check(request: Request, key: str | None = Depends(_key_header)) -> str:  # async: no thread hop per request
        config = request.app.state.gateway.config
        allowed = config.admin_keys | (config.predict_keys if scope == "predict" else frozenset())
        if not key:
            raise HTTPException(401, f"missing {API_KEY_HEADER} header")
        if key not in allowed:
            raise HTTPException(403, f"this key may not {scope}")
        return key

    return check
