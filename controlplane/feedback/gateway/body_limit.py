"""ASGI middleware: 413 for a body over the limit, whether announced by Content-Length or streamed."""

from __future__ import annotations

import json


class BodyLimit:
    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await reject(send, self.limit)
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
            await reject(send, self.limit)


class _TooLarge(Exception):
    pass


def too_large(limit: int) -> bytes:
    return json.dumps({"detail": f"request body larger than {limit} bytes"}).encode()


async def reject(send, limit: int) -> None:
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": too_large(limit)})
