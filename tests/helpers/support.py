"""Helpers the tests share: the CLI as a user runs it, ports, the gateway, S3 names.

Ports and readiness come from the package (controlplane.readiness), so tests, scripts and managed servers
wait the same way: on a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from controlplane.model.signature import parse_tensor_spec
from controlplane.readiness import free_port, wait_until

__all__ = ["free_port", "wait_until"]

TESTS = Path(__file__).resolve().parent
MLCTL = str(Path(sys.executable).parent / "mlctl")
MLP_INPUTS = (parse_tensor_spec("x:float32:8"),)
MULTI_INPUTS = (parse_tensor_spec("tokens:int64:-1"), parse_tensor_spec("feats:float32:5"), parse_tensor_spec("mask:bool:2"))


def run_mlctl(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.run([MLCTL, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


PREDICT_KEY, ADMIN_KEY = "predict-key-1", "admin-key-1"


def call(url: str, path: str, body=None, key: str | None = PREDICT_KEY, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if text.startswith(("{", "[")) else {"text": text})
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode() or "{}")


def start_gateway(triton, log: Path, *options: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`mlctl gateway serve` as a user runs it, once /healthz answers. `env` adds to the environment (e.g. the
    MLCTL_REPOSITORY a canary's state is read from)."""
    port = free_port()
    env = {**os.environ, "MLCTL_GATEWAY_PREDICT_KEYS": PREDICT_KEY, "MLCTL_GATEWAY_ADMIN_KEYS": ADMIN_KEY, "PYTHONPATH": str(TESTS),
           **(env or {})}
    proc = subprocess.Popen([MLCTL, "gateway", "serve", "--port", str(port), "--triton-url", triton.grpc_url, "--log", str(log),
                             *options], env=env)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return call(url, "/healthz", key=None)[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 30, f"gateway on {url}", give_up=lambda: proc.poll() is not None and "it exited")
    except (TimeoutError, RuntimeError):
        proc.kill()
        raise
    return proc, url


def new_s3_uri() -> str:
    return f"s3://models/{uuid.uuid4().hex[:10]}"
