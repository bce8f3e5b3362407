"""API keys and per-key limits: one guard for every route, and a FastAPI dependency per scope (predict, admin).
Admin keys may also predict. Every refusal is counted (GatewayMetrics' security counters)."""

from __future__ import annotations

import math
import time

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException

from controlplane.feedback.gateway.config import API_KEY_HEADER, GatewayConfig
from controlplane.feedback.gateway.metrics import GatewayMetrics
from controlplane.feedback.gateway.ratelimit import Limiter, key_id, parse_limits

_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
SERVICE = "gateway"


class Guard:
    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.admin = frozenset(k.encode() for k in config.admin_keys)
        self.predict = self.admin | {k.encode() for k in config.predict_keys}
        self.limiter = Limiter(config.admin_keys | config.predict_keys, parse_limits(config.key_limits), config.max_body_bytes,
                               config.limits_file)

    def admit(self, key: bytes | None, scope: str, route: str) -> int:
        """The largest body this key may send, when it may call `route`; otherwise HTTPException 401, 403 or 429."""
        if not key:
            self._refuse(scope, route, "missing_key")
            raise HTTPException(401, f"missing {API_KEY_HEADER} header")
        if key not in (self.predict if scope == "predict" else self.admin):
            self._refuse(scope, route, "wrong_scope" if key in self.predict else "unknown_key")
            raise HTTPException(403, f"this key may not {scope}")
        wait = self.limiter.admit(key, time.monotonic())
        if wait:
            self.metrics.rate_limited.labels(SERVICE, key_id(key)).inc()
            retry = max(1, math.ceil(wait))
            raise HTTPException(429, f"this key is over its request rate; retry after {retry} s", headers={"Retry-After": str(retry)})
        return self.limiter.max_body(key)

    def oversized(self, key: bytes) -> None:
        self.metrics.oversized.labels(SERVICE, key_id(key)).inc()

    def _refuse(self, scope: str, route: str, reason: str) -> None:
        self.metrics.auth_failures.labels(SERVICE, reason).inc()
        if scope == "admin":  # a call that would change what the gateway knows (feedback, admin)
            self.metrics.refused_control.labels(SERVICE, route).inc()


def require(scope: str):
    async def check(request: Request, key: str | None = Depends(_key_header)) -> str:  # async: no thread hop per request
        route = getattr(request.scope.get("route"), "path", "other")  # the template: a bounded label
        request.app.state.guard.admit(key.encode() if key else None, scope, route)
        return key

    return check
