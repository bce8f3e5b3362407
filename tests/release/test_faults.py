"""Faults during a switch, each produced for real: a hung replica (SIGSTOP mid-promote), a network partition
(a replica in a network namespace made here, its veth link cut mid-promote), the S3 endpoint killed mid-publish,
and Prometheus down. Bounded: short control time-outs, two replicas, one switch each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from support import free_port

from controlplane.errors import ServerError
from controlplane.model.config import ServingOptions
from controlplane.quality.reference import ReferenceSample
from controlplane.readiness import wait_until
from controlplane.release.lifecycle import Lifecycle
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.replicas import Replica
from controlplane.triton.server.install import assemble_backends, locate_triton
from controlplane.triton.server.local import (
    LocalServers,
    ServerOptions,
    is_ready,
    local_args,
)
from controlplane.triton.targets import Targets

pytestmark = pytest.mark.e2e
CONTROL_TIMEOUT_S = 3.0  # a replica silent this long has failed the switch (short, so the test stays bounded)
X = {"x": np.zeros((1, 8), np.float32)}


def two_versions(root: Path, exports) -> Repository:
    root.mkdir(parents=True, exist_ok=True)
    repo = Repository(open_store(str(root)))
    for _ in range(2):
        repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
    return repo


def local_replica(servers: LocalServers, repo: Repository, name: str):
    return servers.start(ServerOptions(repository=repo.uri, name=name, channel="production", http_port=free_port(),
                                       grpc_port=free_port(), metrics_port=free_port(), exit_timeout_s=2))


def served(url: str) -> set[int]:
    replica = Replica(url)
    try:
        return replica.served("mlp")
    finally:
        replica.close()


def fault_after_first(urls: tuple[str, ...], fault) -> callable:
    """A progress callback that produces `fault` once the first replica serves the new version: mid-promote."""
    def progress(message: str) -> None:
        if f"replica {urls[0]} serves version 2" in message:
            fault()
    return progress


def assert_failed_switch_recorded(lifecycle: Lifecycle, bad_url: str, error: ServerError) -> None:
    assert bad_url in str(error) and "unchanged at version 1" in str(error)
    state = lifecycle.channels.load("mlp")[0]
    assert state.channels["production"] == 1 and state.pending is None
    last = state.history[-1]
    assert (last.action, last.outcome, last.to_version) == ("promote", "failed", 2)
    assert bad_url in last.detail  # the history says why


def test_hung_replica_mid_promote_times_out_reverts_and_reconcile_converges(tmp_path, exports):
    repo = two_versions(tmp_path / "repo", exports)
    servers = LocalServers(tmp_path / "home")
    states = [local_replica(servers, repo, f"r{i}") for i in range(2)]
    urls = tuple(s.grpc_url for s in states)
    hung = states[1].pid
    try:
        Lifecycle(repo, Targets({"production": urls})).promote("mlp", 1, "production", create_channel=True)
        lifecycle = Lifecycle(repo, Targets({"production": urls}), control_timeout_s=CONTROL_TIMEOUT_S,
                              settle_timeout_s=CONTROL_TIMEOUT_S,
                              progress=fault_after_first(urls, lambda: os.kill(hung, signal.SIGSTOP)))
        with pytest.raises(ServerError) as caught:
            lifecycle.promote("mlp", 2, "production")
        assert_failed_switch_recorded(lifecycle, urls[1], caught.value)
        assert served(urls[0]) == {1}  # the replica already switched was reverted
        with TritonClient(states[0].http_url, "http") as client:
            assert client.infer("mlp", X).version == "1"
        os.kill(hung, signal.SIGCONT)
        result = Lifecycle(repo, Targets({"production": urls})).reconcile(["mlp"])
        assert result["errors"] == []
        assert served(urls[0]) == served(urls[1]) == {1}
    finally:
        os.kill(hung, signal.SIGCONT)
        servers.stop_many([state.name for state in states], grace_s=10)


# --- a network partition: a replica in a namespace of its own, reached over a veth pair ------------------
def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespace():
    """A network namespace with a veth pair to it: 10.231.N.1 here, 10.231.N.2 inside. Always removed."""
    tag = uuid.uuid4().hex[:6]
    name, outside, inside = f"mlctl-{tag}", f"vm{tag}", f"vn{tag}"
    net = int(tag[:2], 16)
    try:
        ip("netns", "add", name)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", name)
        ip("addr", "add", f"10.231.{net}.1/30", "dev", outside)
        ip("link", "set", outside, "up")
        ip("netns", "exec", name, "ip", "addr", "add", f"10.231.{net}.2/30", "dev", inside)
        ip("netns", "exec", name, "ip", "link", "set", inside, "up")
        ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield {"name": name, "link": outside, "address": f"10.231.{net}.2"}
    finally:
        subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)


def start_in_namespace(ns: dict, repo: Repository, work: Path) -> tuple[subprocess.Popen, str, str]:
    """tritonserver inside the namespace, listening on its own address; returns (process, grpc url, http url)."""
    install = locate_triton()
    options = ServerOptions(repository=repo.uri, name="partitioned", host=ns["address"], channel="production",
                            http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), exit_timeout_s=2)
    backends = assemble_backends(install, work / "backends")
    command = ["ip", "netns", "exec", ns["name"], str(install.binary),
               *local_args(options, repo.store.triton_uri, str(backends), ["mlp"])]
    with open(work / "partitioned.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(command, env=install.environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    http, grpc = f"{ns['address']}:{options.http_port}", f"{ns['address']}:{options.grpc_port}"
    wait_until(lambda: is_ready(http, timeout=0.5), 120, "tritonserver in the namespace ready",
               give_up=lambda: None if proc.poll() is None else f"exited ({proc.returncode})")
    return proc, grpc, http


def test_partitioned_replica_mid_promote_reverts_the_others_and_reconcile_converges(tmp_path, exports, namespace):
    repo = two_versions(tmp_path / "repo", exports)
    servers = LocalServers(tmp_path / "home")
    work = tmp_path / "ns"
    work.mkdir()
    local = local_replica(servers, repo, "r0")
    proc = None
    try:
        Lifecycle(repo, Targets({"production": (local.grpc_url,)})).promote("mlp", 1, "production", create_channel=True)
        proc, far, _ = start_in_namespace(namespace, repo, work)  # loads version 1: the channel's config
        urls = (local.grpc_url, far)
        assert served(far) == {1}
        lifecycle = Lifecycle(repo, Targets({"production": urls}), control_timeout_s=CONTROL_TIMEOUT_S,
                              settle_timeout_s=CONTROL_TIMEOUT_S,
                              progress=fault_after_first(urls, lambda: ip("link", "set", namespace["link"], "down")))
        with pytest.raises(ServerError) as caught:
            lifecycle.promote("mlp", 2, "production")
        assert_failed_switch_recorded(lifecycle, far, caught.value)
        assert served(local.grpc_url) == {1}
        ip("link", "set", namespace["link"], "up")
        result = Lifecycle(repo, Targets({"production": urls})).reconcile(["mlp"])
        assert result["errors"] == []
        assert served(local.grpc_url) == served(far) == {1}
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        servers.stop("r0", grace_s=10)


# --- the S3 endpoint killed mid-publish, then restarted with what it had stored ---------------------------
# moto keeps its objects in memory; its recorder logs every request it received in full, and replaying the log
# on the restarted endpoint gives back exactly what it held when it was killed (a request cut short is not in it).
MOTO = ("import sys; from werkzeug.serving import run_simple; "
        "from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app; "
        "run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=True)")


def start_moto(port: int, recording: Path) -> subprocess.Popen:
    import sys

    from controlplane.readiness import wait_for_port

    env = {**os.environ, "MOTO_ENABLE_RECORDING": "true", "MOTO_RECORDER_FILEPATH": str(recording)}
    proc = subprocess.Popen([sys.executable, "-c", MOTO, str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, 30, "moto", give_up=lambda: None if proc.poll() is None else "moto exited")
    return proc


def test_s3_killed_mid_publish_leaves_no_half_version_and_a_retry_publishes(tmp_path, exports, monkeypatch):
    import threading

    import boto3

    from controlplane.errors import MlctlError, NotFoundError

    port, recording = free_port(), tmp_path / "moto.log"
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    proc = start_moto(port, recording)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="models")
        repo = Repository(open_store("s3://models/faults"))
        repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
        # a large reference sample keeps version 2's upload going long enough to be cut (it goes after the model)
        big = tmp_path / "reference.npz"
        np.savez(big, features=np.zeros((400_000, 8), np.float32), predicted=np.zeros(400_000, np.int64))  # 16 MB, multipart
        sample = ReferenceSample.read(big)
        outcome: list[BaseException | None] = []

        def publish() -> None:
            try:
                repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {}, sample)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        worker = threading.Thread(target=publish)
        worker.start()
        wait_until(lambda: "Contents" in s3.list_objects_v2(Bucket="models", Prefix="faults/.mlctl/staging/mlp/2/model.onnx"),
                   30, "version 2's model file uploaded", poll_s=0.01)
        proc.kill()  # mid-publish: the model is up (staged), the reference is going up, the manifest not yet
        proc.wait(timeout=10)
        worker.join(timeout=120)
        assert outcome and isinstance(outcome[0], MlctlError), f"the publish should fail when S3 dies: {outcome}"
        proc = start_moto(port, recording)
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/recorder/replay-recording", method="POST"), timeout=120)
        assert repo.versions("mlp") == [1]  # the half version is not visible
        assert "Contents" not in s3.list_objects_v2(Bucket="models", Prefix="faults/mlp/2/")  # not even a folder to Triton
        with pytest.raises(NotFoundError):
            repo.manifest("mlp", 2)
        retried = repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
        assert retried.version == 3 and repo.versions("mlp") == [1, 3]  # number 2 stays claimed by the cut publish
        assert repo.verify("mlp", 3) == []
    finally:
        proc.kill()
        proc.wait(timeout=10)


# --- Prometheus down ---------------------------------------------------------------------------------------
def test_prometheus_down_metrics_says_so_and_suggests_direct_and_health_fails(tmp_path, triton):
    import shutil

    import yaml
    from support import run_mlctl

    from controlplane.observe.metrics import artifacts

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/test.sh, which installs Debian's package")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(artifacts.prometheus_config([f"127.0.0.1:{triton.metrics_port}"], [], [], "1s")))
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        from controlplane.observe.health import check_prometheus

        wait_until(lambda: check_prometheus(url).ok, 60, "prometheus ready",
                   give_up=lambda: None if proc.poll() is None else "prometheus exited")
    finally:
        proc.kill()  # down: it was up a moment ago, now nothing answers on its port
        proc.wait(timeout=10)
    metrics = run_mlctl("metrics", "metered", "--version", "1", "--prometheus-url", url)
    assert metrics.returncode == 5 and metrics.stdout == ""
    assert f"Prometheus at {url} is not reachable" in metrics.stderr and "--source direct" in metrics.stderr
    health = run_mlctl("-r", triton.repository, "health", "--url", triton.grpc_url, "--prometheus-url", url, "--json")
    assert health.returncode == 1
    checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
    assert checks[f"prometheus {url}"]["ok"] is False and "not reachable" in checks[f"prometheus {url}"]["detail"]
