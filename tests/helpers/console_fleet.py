"""What the console tests and scripts/console_bench.py look at: a repository with one model of many versions,
real Triton replicas for two channels, a targets file, and `mlctl console` itself, started as a user starts it."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from controlplane.model.config import ServingOptions
from controlplane.readiness import free_port, wait_until
from controlplane.release.lifecycle import Lifecycle
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.server.local import LocalServers, ServerOptions
from controlplane.triton.server.state import ServerState
from controlplane.triton.targets import load_targets

MLCTL = str(Path(sys.executable).parent / "mlctl")
MODEL = "shop"
ADMIN_KEY = "console-admin-key"
LAYOUT = {"production": 2, "staging": 1}  # 2 channels, 3 replicas


@dataclass
class Fleet:
    root: Path
    repo: Repository
    servers: LocalServers
    states: dict[str, list[ServerState]]  # channel -> its replicas
    targets_file: Path

    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.repo, load_targets(str(self.targets_file)))

    def write_targets(self, extra: dict[str, list[str]] | None = None) -> None:
        lines = []
        for channel, states in self.states.items():
            urls = [s.grpc_url for s in states] + (extra or {}).get(channel, [])
            lines += [f"[channels.{channel}]", "replicas = [" + ", ".join(f'"{u}"' for u in urls) + "]"]
        self.targets_file.write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        self.servers.stop_many([state.name for states in self.states.values() for state in states], grace_s=5)


def build_fleet(root: Path, bundle, versions: int = 10) -> Fleet:
    """`versions` versions of MODEL; production holds the newest, staging the one before."""
    (root / "repo").mkdir(parents=True)
    repo = Repository(open_store(str(root / "repo")))
    for i in range(versions):
        repo.publish(bundle, MODEL, "onnx", ServingOptions(), {"run": i + 1, "note": f"training run {i + 1}"})
    servers = LocalServers(root / "home")
    fleet = Fleet(root, repo, servers, {}, root / "mlctl.toml")
    try:
        for channel, count in LAYOUT.items():
            fleet.states[channel] = [
                servers.start(ServerOptions(repository=repo.uri, name=f"{channel}-{i}", channel=channel, http_port=free_port(),
                                            grpc_port=free_port(), metrics_port=free_port(), exit_timeout_s=3))
                for i in range(count)]
        fleet.write_targets()
        lc = fleet.lifecycle()
        lc.promote(MODEL, versions, "production", "the newest run")
        lc.promote(MODEL, versions - 1, "staging", "the run before, for comparison")
    except BaseException:
        fleet.stop()
        raise
    return fleet


def start_console(repository: str, targets: Path | None, *options: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`mlctl console` as a user runs it, once /healthz answers."""
    port = free_port()
    args = [MLCTL, "-r", repository, "console", "--port", str(port), *options]
    if targets is not None:
        args[3:3] = ["--targets", str(targets)]
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return get(url + "/healthz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 30, f"console on {url}", give_up=lambda: proc.poll() is not None and "it exited")
    except (TimeoutError, RuntimeError):
        proc.kill()
        raise
    return proc, url


def stop_console(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def get(url: str, timeout: float = 30) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def post(url: str, fields: dict, cookie: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode(), method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
