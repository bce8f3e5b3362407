"""The gateway tests' own Triton and gateway processes.

A Triton of its own (`stage`) serves copies of the session's digits classifier: `classifier`, its canary model
(`classifier.canary`, serving the same weights as version 2) and `lenient`, whose config declares mlctl.allow_non_finite. `gateway_factory` starts
`mlctl gateway serve` as a user runs it and stops (SIGTERM, which flushes the log) what it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from support import ADMIN_KEY, MLCTL, PREDICT_KEY, TESTS, call, free_port, wait_until

from controlplane.release.canary import canary_model
from controlplane.triton.server.local import LocalServers, ServerOptions

LENIENT_PARAMETER = '\nparameters {\n  key: "mlctl.allow_non_finite"\n  value { string_value: "true" }\n}\n'


@pytest.fixture(scope="session")
def stage(session_repo, tmp_path_factory):
    """A repository with classifier, classifier.canary and lenient, and a tritonserver serving it."""
    root = tmp_path_factory.mktemp("checks")
    repo, source = root / "repo", Path(session_repo.uri)
    shutil.copytree(source / ".mlctl", repo / ".mlctl", ignore=shutil.ignore_patterns("canary"))
    for name in ("classifier", canary_model("classifier"), "lenient"):
        shutil.copytree(source / "classifier", repo / name)
        if name == canary_model("classifier"):
            (repo / name / "1").rename(repo / name / "2")  # it serves the canary's version, as a real canary does
        config = repo / name / "config.pbtxt"
        text = config.read_text().replace('name: "classifier"', f'name: "{name}"')
        config.write_text(text + (LENIENT_PARAMETER if name == "lenient" else ""))
    servers = LocalServers(root / "home")
    triton = servers.start(ServerOptions(repository=str(repo), name="checks", http_port=free_port(), grpc_port=free_port(),
                                         metrics_port=free_port(), timeout_s=120, exit_timeout_s=5))
    try:
        yield {"repo": repo, "triton": triton}
    finally:
        servers.stop("checks", grace_s=15)


class Gateway:
    """`mlctl gateway serve` as a user runs it, its stderr kept; stopping it (SIGTERM) flushes the log."""

    def __init__(self, stage, log: Path, stderr: Path, repository: Path | None = None, options: tuple[str, ...] = ()) -> None:
        port = free_port()
        env = {**os.environ, "MLCTL_GATEWAY_PREDICT_KEYS": PREDICT_KEY, "MLCTL_GATEWAY_ADMIN_KEYS": ADMIN_KEY,
               "PYTHONPATH": str(TESTS)}
        if repository is not None:
            env["MLCTL_REPOSITORY"] = str(repository)
        self.stderr_path, self.log, self.url = stderr, log, f"http://127.0.0.1:{port}"
        self._stderr = open(stderr, "wb")
        self.proc = subprocess.Popen([MLCTL, "gateway", "serve", "--port", str(port), "--triton-url", stage["triton"].grpc_url,
                                      "--log", str(log), "--flush-rows", "100", "--flush-seconds", "0.2", *options],
                                     env=env, stderr=self._stderr)
        try:
            wait_until(self._healthy, 60, f"gateway on {self.url}", give_up=lambda: self.proc.poll() is not None and "it exited")
        except (TimeoutError, RuntimeError):
            self.stop()
            raise

    def _healthy(self) -> bool:
        try:
            return call(self.url, "/healthz", key=None)[0] == 200
        except OSError:
            return False

    def metrics(self) -> str:
        return call(self.url, "/metrics", key=None)[1]["text"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self._stderr.close()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()


@pytest.fixture
def gateway_factory(stage, tmp_path):
    started: list[Gateway] = []

    def start(log: Path | None = None, repository: Path | None = None, options: tuple[str, ...] = ()) -> Gateway:
        gateway = Gateway(stage, log or tmp_path / "log", tmp_path / f"gateway-{len(started)}.stderr", repository, options)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


