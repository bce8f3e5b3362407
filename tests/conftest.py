"""Shared fixtures: isolated environment, a session repository, and a real tritonserver."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.bundle import ExportBundle
from controlplane.export import ExportRequest, export_model
from controlplane.model_config import ServingOptions, VersionPolicy
from controlplane.repository import Repository
from controlplane.server.local import LocalServers, ServerOptions
from controlplane.signature import parse_tensor_spec
from controlplane.store import open_store

TESTS = Path(__file__).resolve().parent
MLCTL = str(Path(sys.executable).parent / "mlctl")
MLP_INPUTS = (parse_tensor_spec("x:float32:8"),)
MULTI_INPUTS = (parse_tensor_spec("tokens:int64:-1"), parse_tensor_spec("feats:float32:5"), parse_tensor_spec("mask:bool:2"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_mlctl(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.run([MLCTL, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("MLCTL_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MLCTL_HOME", str(tmp_path / "mlctl-home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, ExportBundle]:
    root = tmp_path_factory.mktemp("exports")
    sys.path.insert(0, str(TESTS))
    return {
        "mlp": export_model(ExportRequest("models_under_test:mlp", MLP_INPUTS, root / "mlp", ("y",))),
        "multi": export_model(ExportRequest("models_under_test:multi", MULTI_INPUTS, root / "multi", ("h", "s"))),
    }


@pytest.fixture(scope="session")
def session_repo(tmp_path_factory, exports) -> Repository:
    """mlp / mlp_ts / multi / multi_ts, two versions of mlp, and a model whose config lies about its output."""
    root = tmp_path_factory.mktemp("repo")
    repo = Repository(open_store(str(root)))
    # a 20 ms batching window lets concurrent requests meet in one batch on a 2-core machine
    batching = ServingOptions(max_queue_delay_us=20_000, version_policy=VersionPolicy("all"))
    for name, fmt, bundle in [
        ("mlp", "onnx", exports["mlp"]),
        ("mlp_ts", "torchscript", exports["mlp"]),
        ("multi", "onnx", exports["multi"]),
        ("multi_ts", "torchscript", exports["multi"]),
    ]:
        repo.publish(bundle, name, fmt, batching, {"purpose": "tests"})
    repo.publish(exports["mlp"], "mlp", "onnx", batching, {"purpose": "second version"})
    # config says FP64 where the model returns float32: the stand-in must refuse, as native backends do
    shutil.copytree(root / "mlp", root / "liar")
    config = (root / "liar" / "config.pbtxt").read_text()
    (root / "liar" / "config.pbtxt").write_text(
        config.replace('name: "mlp"', 'name: "liar"').replace("data_type: TYPE_FP32\n  dims: 4", "data_type: TYPE_FP64\n  dims: 4")
    )
    return repo


@pytest.fixture(scope="session")
def triton(tmp_path_factory, session_repo):
    """A real tritonserver (the nvidia-pytriton binary) serving the session repository."""
    home = tmp_path_factory.mktemp("server-home")
    servers = LocalServers(home)
    options = ServerOptions(
        repository=session_repo.uri,
        name="tests",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        timeout_s=120,
        exit_timeout_s=5,
    )
    state = servers.start(options)
    try:
        yield state
    finally:
        servers.stop("tests", grace_s=15)
