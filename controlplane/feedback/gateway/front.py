"""The gateway's front door, a plain ASGI app: the inference routes are served here, with no framework layer
on their path (no routing table, no dependency injection, no request object); everything else (feedback,
health, metrics, model metadata, the OpenAPI document) goes to the FastAPI app behind it. `respond` is the
inference route itself, bytes in and out: the gateway's own HTTP protocol (protocol.py) calls it directly.

    POST /v1/models/{model}/predict                  the simple JSON route          scope: predict
    POST /v2/models/{model}[/versions/{v}]/infer     KServe v2 / Triton HTTP        scope: predict
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.exceptions import HTTPException

from controlplane.feedback.gateway import infer, predict, v2
from controlplane.feedback.gateway.body_limit import too_large
from controlplane.feedback.gateway.config import API_KEY_HEADER
from controlplane.feedback.gateway.forward import Labels
from controlplane.feedback.gateway.state import GatewayState

_KEY = API_KEY_HEADER.lower().encode()


def route_of(path: str) -> tuple[str, str, str] | None:
    """(route, model, version) of an inference path; None for any other path (pure)."""
    parts = path.split("/")
    if len(parts) == 5 and parts[1] == "v1" and parts[2] == "models" and parts[4] == "predict" and parts[3]:
        return predict.ROUTE, parts[3], ""
    if parts[1:3] == ["v2", "models"] and parts[-1] == "infer" and parts[3]:
        if len(parts) == 5:
            return infer.ROUTE, parts[3], ""
        if len(parts) == 7 and parts[4] == "versions" and parts[5]:
            return infer.ROUTE, parts[3], parts[5]
    return None


class Front:
    def __init__(self, gateway: GatewayState, app) -> None:
        self.gateway, self.app = gateway, app
        self.guard = app.state.guard  # API keys and per-key limits (auth.py)
        self.largest_body = self.guard.limiter.largest_body  # what any key may send, on any route

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = route_of(scope["path"])
            if route is not None:
                return await self._serve(route, scope, receive, send)
        await self.app(scope, receive, send)

    async def _serve(self, route: tuple[str, str, str], scope, receive, send) -> None:
        headers = dict(scope["headers"])
        status, data, extra = await self.respond(route, headers, lambda limit: self._body(headers, receive, limit))
        await _send(send, status, data, extra)

    async def respond(self, route: tuple[str, str, str], headers: dict[bytes, bytes],
                      read: Callable[[int], Awaitable[bytes | None]]) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """(status, body, headers) of an inference request; `read(limit)` gives its body, None when over `limit`
        (served by the ASGI call above, and by the gateway's own HTTP protocol with the body already read)."""
        name, model, version = route
        started, labels = time.perf_counter(), Labels()
        try:
            api_key = headers.get(_KEY)
            limit = self.guard.admit(api_key, "predict", name)
            body = await read(limit)
            if body is None:
                labels.status = "413"
                self.guard.oversized(api_key)
                return 413, too_large(limit), [(b"content-type", b"application/json")]
            if name == predict.ROUTE:
                key = headers.get(b"x-client-key")
                data, extra = await predict.handle(self.gateway, model, body, None if key is None else key.decode("latin-1"),
                                                   started, labels)
            else:
                data, extra = await infer.handle(self.gateway, model, version, body, headers, started, labels)
            labels.status = "ok"
            return 200, data, extra
        except HTTPException as exc:
            labels.status = str(exc.status_code)
            data = orjson.dumps({"detail": exc.detail}) if name == predict.ROUTE else v2.error_body(str(exc.detail))
            extra = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
            return exc.status_code, data, [(b"content-type", b"application/json"), *extra]
        finally:
            self.gateway.metrics.observe(name, labels.model, labels.version, labels.status, time.perf_counter() - started)

    async def _body(self, headers: dict[bytes, bytes], receive, limit: int) -> bytes | None:
        """The whole body; None when it is over the limit (announced or streamed)."""
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return None
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HTTPException(400, "the client went away before sending its whole body")
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
