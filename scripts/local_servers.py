"""The servers the drills and benchmarks start on this machine, each waited for until it is ready:
Triton replicas on free ports, an S3-compatible server (moto), and any child server that listens on a port.

Ports and readiness come from the package (controlplane.readiness), as for the managed servers and the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.readiness import free_port, wait_for_port

if TYPE_CHECKING:
    from controlplane.store.repository import Repository
    from controlplane.triton.load import Load
    from controlplane.triton.server.local import ServerOptions
    from controlplane.triton.server.state import ServerState

MOTO = (
    "import sys; from werkzeug.serving import run_simple; "
    "from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app; "
    "run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=sys.argv[2] == 'threaded')"
)


def scratch_repository(prefix: str) -> tuple[Path, Repository]:
    """A work folder in the temp dir and an empty local repository in its `repo/`."""
    import tempfile

    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "repo").mkdir()
    return work, Repository(open_store(str(work / "repo")))


def triton_options(repository: str, name: str, **options) -> ServerOptions:
    """ServerOptions for a local Triton replica on three free ports."""
    from controlplane.triton.server.local import ServerOptions

    return ServerOptions(repository=repository, name=name, http_port=free_port(), grpc_port=free_port(),
                         metrics_port=free_port(), **options)


@contextmanager
def channel_replicas(home: Path, repository: str, count: int, channel: str = "production",
                     server_args: tuple[str, ...] = ()) -> Iterator[list[ServerState]]:
    """`count` local replicas serving `channel` of `repository` (tritonserver given `server_args` too), each
    ready; all stopped on the way out."""
    from controlplane.triton.server.local import LocalServers

    servers, states = LocalServers(home), []
    try:
        for i in range(count):
            states.append(servers.start(triton_options(repository, f"r{i}", channel=channel, extra_args=server_args)))
        yield states
    finally:
        servers.stop_many([state.name for state in states], grace_s=15)


def demo_load(model: str, states: list[ServerState], clients: int, max_seconds: float,
              protocols: tuple[str, ...] = ("grpc", "http")) -> Load:
    """A steady load of one fixed demo row on every replica (round-robin), started."""
    import numpy as np

    from controlplane.demo import digits as demo
    from controlplane.triton.load import Endpoint, Load

    rows = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    endpoints = [Endpoint(s.grpc_url, s.http_url) for s in states]
    return Load(model, lambda: {demo.INPUT_NAME: rows}, endpoints, clients=clients, protocols=protocols,
                max_seconds=max_seconds).start()


def start_listening(command: list[str], port: int, what: str, timeout_s: float = 60, **popen) -> subprocess.Popen:
    """Start `command` and return once it accepts connections on `port`; if it exits first, fail at once."""
    proc = subprocess.Popen(command, **popen)

    def exited() -> str | None:
        return None if proc.poll() is None else f"exited with status {proc.returncode} before listening on port {port}"

    try:
        wait_for_port("127.0.0.1", port, timeout_s, what, give_up=exited)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def start_s3(bucket: str, threaded: bool = True) -> tuple[subprocess.Popen, dict[str, str]]:
    """An S3-compatible server with `bucket` created; its AWS_* settings are put in os.environ and returned."""
    port = free_port()
    proc = start_listening([sys.executable, "-c", MOTO, str(port), "threaded" if threaded else "single"], port,
                           "S3-compatible server (moto)", timeout_s=30, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": bucket, "AWS_SECRET_ACCESS_KEY": bucket, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    os.environ.update(env)
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket=bucket)
    except BaseException:
        stop(proc)
        raise
    return proc, env


def stop(proc: subprocess.Popen, timeout_s: float = 10) -> None:
    proc.terminate()
    proc.wait(timeout=timeout_s)
