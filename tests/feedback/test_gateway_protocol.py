"""The gateway's own HTTP/1.1 protocol, over raw sockets against `mlctl gateway serve`: what HTTP clients other
than tritonclient send (pipelined requests, chunked bodies, Expect: 100-continue, HEAD, HTTP/1.0), oversized
bodies on both kinds of route, and keep-alive."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
from support import PREDICT_KEY

ROW = json.dumps({"inputs": {"pixels": np.zeros((1, 64)).tolist()}}).encode()
LIMIT = 20_000


@pytest.fixture
def gateway(gateway_factory):
    return gateway_factory(options=("--max-body-bytes", str(LIMIT)))


def connect(gateway) -> socket.socket:
    host, port = gateway.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def predict(body: bytes = ROW, key: str = PREDICT_KEY, extra: str = "") -> bytes:
    return (f"POST /v1/models/classifier/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` answers off the socket: (status, headers, body), read by their content-length (or chunks)."""
    buffer, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(answers)} answers")
            buffer += chunk
        head, buffer = buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if status == 100:
            continue
        length = int(headers.get("content-length", 0))
        if headers.get("transfer-encoding") == "chunked":
            while not buffer.endswith(b"0\r\n\r\n"):
                buffer += sock.recv(65536)
            body, buffer = _unchunk(buffer), b""
        else:
            while len(buffer) < length:
                buffer += sock.recv(65536)
            body, buffer = buffer[:length], buffer[length:]
        answers.append((status, headers, body))
    return answers


def _unchunk(data: bytes) -> bytes:
    out = b""
    while True:
        size, data = data.split(b"\r\n", 1)
        if int(size, 16) == 0:
            return out
        out, data = out + data[:int(size, 16)], data[int(size, 16) + 2:]


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


def test_pipelined_requests_are_answered_in_order_on_one_connection(gateway):
    """An inference request, a bad-key one, the health route and another inference request, sent in one write:
    four answers, in the order asked."""
    with connect(gateway) as sock:
        sock.sendall(predict() + predict(key="wrong") + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + predict())
        answers = read_answers(sock, 4)
    assert [status for status, _, _ in answers] == [200, 403, 200, 200]
    first, last = json.loads(answers[0][2]), json.loads(answers[3][2])
    assert first["predictions"][0]["prediction_id"] != last["predictions"][0]["prediction_id"]
    assert answers[2][1]["content-type"].startswith("application/json")


def test_a_client_that_reads_late_gets_every_answer(gateway):
    """1,500 pipelined requests for the OpenAPI document (~8 MB of answers, more than the kernel's socket buffers
    hold) and a prediction, written by a thread while the client reads nothing for 2 s: the server stops reading
    requests while its answers wait, then answers the rest, in order, none lost."""
    count = 1500
    document = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(gateway) as sock:
        writer = threading.Thread(target=sock.sendall, args=(document * count + predict(),), daemon=True)
        writer.start()
        time.sleep(2)
        answers = read_answers(sock, count + 1)
        writer.join(timeout=30)
    assert [status for status, _, _ in answers] == [200] * (count + 1)
    assert len({body for _, _, body in answers[:count]}) == 1 and "paths" in json.loads(answers[0][2])
    assert len(json.loads(answers[-1][2])["predictions"]) == 1


def test_chunked_bodies_and_expect_continue_are_read_whole(gateway):
    chunked = ("POST /v1/models/classifier/predict HTTP/1.1\r\nHost: x\r\nX-API-Key: " + PREDICT_KEY +
               "\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    half = len(ROW) // 2
    for part in (ROW[:half], ROW[half:]):
        chunked += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    chunked += b"0\r\n\r\n"
    with connect(gateway) as sock:
        sock.sendall(chunked)
        ((status, _, body),) = read_answers(sock, 1)
        assert status == 200 and len(json.loads(body)["predictions"]) == 1
        sock.sendall(predict(extra="Expect: 100-continue\r\n"))  # curl's way for bodies over 1 KB
        ((status, _, _),) = read_answers(sock, 1)
        assert status == 200


def test_oversized_bodies_are_refused_413_and_the_connection_closed(gateway):
    big = b"[" + b"0," * LIMIT + b"0]"
    with connect(gateway) as sock:  # an inference route: the key is checked first, then the size
        sock.sendall(predict(body=big))
        ((status, headers, body),) = read_answers(sock, 1)
        assert status == 413 and f"larger than {LIMIT} bytes" in json.loads(body)["detail"]
    with connect(gateway) as sock:
        sock.sendall(predict(body=big, key="wrong"))
        assert read_answers(sock, 1)[0][0] == 403
    with connect(gateway) as sock:  # any other route: refused before the app sees it
        sock.sendall(f"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Length: {len(big)}\r\n\r\n".encode() + big)
        ((status, headers, _),) = read_answers(sock, 1)
        assert status == 413 and headers.get("connection") == "close"
        assert closed(sock)
    assert 'mlctl_security_oversized_requests_total{key=' in gateway.metrics()


def test_head_and_http_1_0_are_answered_as_http_says(gateway):
    with connect(gateway) as sock:  # HEAD: the answer's length, never its body (the next answer follows at once)
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"}"):
            data += sock.recv(65536)
    head, get = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 405") and b"content-length: " in head  # FastAPI serves GET only
    assert get.startswith(b"HTTP/1.1 200") and get.endswith(b'{"status":"ok"}')
    with connect(gateway) as sock:  # HTTP/1.0 without keep-alive: one answer, then closed
        sock.sendall(predict().replace(b"HTTP/1.1", b"HTTP/1.0", 1))
        ((status, _headers, _),) = read_answers(sock, 1)
        assert status == 200 and closed(sock)


def test_garbage_is_answered_400_and_closed(gateway):
    with connect(gateway) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 400") and closed(sock)


def test_an_idle_connection_is_closed_after_keep_alive_and_a_busy_one_is_not(gateway_factory):
    gateway = gateway_factory(options=("--keep-alive-s", "1.5"))
    with connect(gateway) as sock:
        for _ in range(3):  # requests 1 s apart: each starts the idle time again
            sock.sendall(predict())
            assert read_answers(sock, 1)[0][0] == 200
            time.sleep(1.0)
        started = time.monotonic()
        sock.settimeout(10)
        assert sock.recv(65536) == b""  # closed by the gateway, not by this end
        assert 0.2 < time.monotonic() - started < 3.0
