"""The gateway's HTTP/1.1 protocol, for uvicorn (`uvicorn.run(..., http=GatewayProtocol)`): uvicorn keeps the
process side (workers, signals, lifespan, graceful shutdown, TLS); this class reads and answers the requests.

An inference request (front.route_of) goes straight to the front's `respond` with the body as bytes: no ASGI
scope, no receive/send messages, no task per request beyond the one that awaits Triton, and the answer written in
one piece. Every other request (feedback, health, metrics, metadata, docs) goes to the ASGI app as usual, with
its body already read. Bodies are read up to the largest any key may send; a larger one is answered 413 at once
(after the key is checked, on the inference routes) and the connection closed.

Requests on one connection are answered in order: a pipelined request waits, with reading paused, for the one
before it.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import deque
from urllib.parse import unquote

import httptools

from controlplane.feedback.gateway.body_limit import too_large
from controlplane.feedback.gateway.front import Front, route_of

logger = logging.getLogger(__name__)

_STATUS = {code: f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}\r\n".encode() for code in http.HTTPStatus}


def status_line(code: int) -> bytes:
    return _STATUS.get(code) or f"HTTP/1.1 {code} \r\n".encode()


def answer_head(status: int, headers, keep: bool, extra: tuple[tuple[bytes, bytes], ...] = ()) -> list[bytes]:
    """An answer's status line and headers, up to and with the blank line, as parts to join."""
    parts = [status_line(status)]
    for name, value in (*headers, *extra):
        parts += [name, b": ", value, b"\r\n"]
    if not keep:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return parts


def front_of(app) -> Front | None:
    """The gateway's front inside whatever uvicorn wrapped around it; None when there is none."""
    seen = 0
    while app is not None and not isinstance(app, Front) and seen < 8:
        app, seen = getattr(app, "app", None), seen + 1
    return app if isinstance(app, Front) else None


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "path", "query", "raw_path", "size", "version")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] | None = []  # None: over the largest body any key may send
        self.size = 0


class GatewayProtocol(asyncio.Protocol):
    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        if not config.loaded:
            config.load()
        self.app, self.front = config.loaded_app, front_of(config.loaded_app)
        self.limit = self.front.largest_body if self.front is not None else None
        self.root_path, self.keep_alive_s = config.root_path, config.timeout_keep_alive
        self.server_state, self.app_state = server_state, app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.request: _Request | None = None  # being parsed
        self.waiting: deque[_Request] = deque()  # parsed, not yet answered
        self.busy = False  # a request is being answered
        self.write_paused = False  # the transport's write buffer is full
        self.closing = False
        self.lost = asyncio.Event()  # the connection is gone
        self.idle_timer: asyncio.TimerHandle | None = None  # one per connection, re-armed as it fires
        self.active_at = 0.0  # loop time of the last request read or answer written
        self.server = self.client = None
        self.scheme = "http"

    # --- asyncio ---------------------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server_state.connections.add(self)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        self.active_at = self.loop.time()
        self.idle_timer = self.loop.call_later(self.keep_alive_s, self._idle)

    def connection_lost(self, exc) -> None:
        self.server_state.connections.discard(self)
        self.closing = True
        self.lost.set()
        if self.idle_timer is not None:
            self.idle_timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.active_at = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, b"protocol upgrades are not served here")
        except httptools.HttpParserError as exc:
            self._fail(400, f"invalid HTTP request: {exc}".encode())

    def pause_writing(self) -> None:
        """The client is not reading its answers: stop reading its requests until it does."""
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy and not self.transport.is_closing():
            self.transport.resume_reading()
            self._next()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now when idle, else after the answer being written."""
        self.closing = True
        if not self.busy and not self.waiting:
            self.transport.close()

    # --- httptools -------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url, self.request = b"", _Request()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self.request.headers.append((name, value))
        if name == b"expect" and value.lower() == b"100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_headers_complete(self) -> None:
        request, parser = self.request, self.parser
        request.method, request.version = parser.get_method().decode("ascii"), parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        url = self.url
        if b"?" in url or b"#" in url or not url.startswith(b"/"):
            parsed = httptools.parse_url(url)
            request.raw_path, request.query = parsed.path, parsed.query or b""
        else:  # a bare path, as inference requests have: nothing to parse
            request.raw_path, request.query = url, b""
        path = request.raw_path.decode("ascii", errors="replace")
        request.path = unquote(path) if "%" in path else path

    def on_body(self, body: bytes) -> None:
        request = self.request
        if request.body is None:
            return
        request.size += len(body)
        if self.limit is not None and request.size > self.limit:
            request.body = None  # answered 413; what is left of it is read and dropped
        else:
            request.body.append(body)

    def on_message_complete(self) -> None:
        self.waiting.append(self.request)
        self.request = None
        if self.busy or self.write_paused:
            self.transport.pause_reading()  # pipelined: answer in order
        else:
            self._next()

    # --- answering -------------------------------------------------------------------------------
    def _next(self) -> None:
        if self.busy or not self.waiting or self.transport.is_closing():
            return
        self.busy = True
        task = self.loop.create_task(self._answer(self.waiting.popleft()))
        self.server_state.tasks.add(task)
        task.add_done_callback(self.server_state.tasks.discard)

    async def _answer(self, request: _Request) -> None:
        keep = request.keep_alive and not self.closing
        try:
            route = route_of(request.path) if self.front is not None and request.method == "POST" else None
            if route is not None:
                body = _joined(request.body)

                async def read(limit: int) -> bytes | None:
                    return body if body is not None and len(body) <= limit else None

                status, data, headers = await self.front.respond(route, dict(request.headers), read)
                self._write(request, status, headers, data, keep)
            else:
                keep = await self._asgi(request, keep)
        except Exception:
            logger.exception("the gateway failed to answer %s %s", request.method, request.path)
            keep = False
            self._write(request, 500, [(b"content-type", b"text/plain")], b"Internal Server Error", False)
        finally:
            self.busy = False
        self.server_state.total_requests += 1
        if not keep or self.closing:
            self.transport.close()
            return
        if self.write_paused:
            return  # resume_writing goes on
        self.transport.resume_reading()
        self.active_at = self.loop.time()
        if self.waiting:
            self._next()

    def _write(self, request: _Request, status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep: bool) -> None:
        if self.transport.is_closing():  # the client went away while its request was answered
            return
        parts = answer_head(status, (*self.server_state.default_headers, *headers), keep,
                            ((b"content-length", str(len(body)).encode()),))
        if request.method != "HEAD":
            parts.append(body)
        self.transport.write(b"".join(parts))

    async def _asgi(self, request: _Request, keep: bool) -> bool:
        """Any other route, through the ASGI app; whether the connection may stay open."""
        if request.body is None:
            self._write(request, 413, [(b"content-type", b"application/json")], too_large(self.limit), False)
            return False
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": request.version,
                 "server": self.server, "client": self.client, "scheme": self.scheme, "root_path": self.root_path,
                 "method": request.method, "path": self.root_path + request.path,
                 "raw_path": self.root_path.encode() + request.raw_path, "query_string": request.query,
                 "headers": request.headers, "state": self.app_state.copy()}
        body, sent = _joined(request.body), False
        response = _Response(self, request, keep)

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.lost.wait()  # asked again: only the client going away answers it
            return {"type": "http.disconnect"}

        await self.app(scope, receive, response.send)
        if not response.started:
            self._write(request, 500, [(b"content-type", b"text/plain")], b"Internal Server Error", False)
            return False
        if not response.complete:
            return False
        return response.keep

    # --- keep-alive --------------------------------------------------------------------------------
    def _idle(self) -> None:
        """The connection's one timer (no timer made and cancelled per request): closes a connection idle for
        keep_alive_s, else looks again when it could be."""
        if self.transport.is_closing():
            return
        if self.busy or self.waiting or self.request is not None:  # a request is being read or answered
            self.idle_timer = self.loop.call_later(self.keep_alive_s, self._idle)
            return
        idle_s = self.loop.time() - self.active_at
        if idle_s < self.keep_alive_s:
            self.idle_timer = self.loop.call_later(self.keep_alive_s - idle_s, self._idle)
        else:
            self.transport.close()

    def _fail(self, status: int, message: bytes) -> None:
        if not self.transport.is_closing():
            head = answer_head(status, ((b"content-type", b"text/plain"), (b"content-length", str(len(message)).encode())), False)
            self.transport.write(b"".join([*head, message]))
            self.transport.close()


class _Response:
    """An ASGI app's answer, written as it comes: with its content-length when it gives one, else chunked."""

    def __init__(self, protocol: GatewayProtocol, request: _Request, keep: bool) -> None:
        self.protocol, self.request, self.keep = protocol, request, keep
        self.started = self.complete = self.chunked = False

    async def send(self, message: dict) -> None:
        transport = self.protocol.transport
        if transport.is_closing():
            return
        if message["type"] == "http.response.start":
            if self.started:
                raise RuntimeError("the response has already started")
            self.started = True
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
            self.chunked = self.request.method != "HEAD" and not any(k == b"content-length" for k, _ in headers)
            if any(k == b"connection" and v.lower() == b"close" for k, v in headers):
                self.keep = False
            chunked = ((b"transfer-encoding", b"chunked"),) if self.chunked else ()
            transport.write(b"".join(answer_head(message["status"], (*self.protocol.server_state.default_headers, *headers),
                                                 self.keep, chunked)))
        elif message["type"] == "http.response.body":
            if not self.started or self.complete:
                raise RuntimeError("a body message outside a response")
            body, more = message.get("body", b""), message.get("more_body", False)
            if self.request.method != "HEAD":
                if self.chunked:
                    transport.write(b"".join([f"{len(body):x}\r\n".encode(), body, b"\r\n"]) if body else b"")
                    if not more:
                        transport.write(b"0\r\n\r\n")
                elif body:
                    transport.write(body)
            self.complete = not more


def _joined(chunks: list[bytes] | None) -> bytes | None:
    if chunks is None:
        return None
    if not chunks:
        return b""
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _address(name) -> tuple[str, int] | None:
    return (str(name[0]), int(name[1])) if isinstance(name, tuple) and len(name) >= 2 else None
