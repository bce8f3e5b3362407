"""Canaries through the real gateway and a real Triton replica of the production channel."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import ADMIN_KEY, MLCTL, call, free_port, run_mlctl

from controlplane.model.bundle import ExportBundle
from controlplane.model.config import ServingOptions
from controlplane.release.lifecycle import Lifecycle
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.server.local import LocalServers, ServerOptions
from controlplane.triton.targets import Targets

pytestmark = pytest.mark.e2e
ROW = {"inputs": {"x": [[0.1] * 8]}}


@pytest.fixture(scope="module")
def stage(tmp_path_factory, exports):
    """A repository, one production replica, and a gateway that logs and reads canary state."""
    import torch

    root = tmp_path_factory.mktemp("canary")
    (root / "repo").mkdir()
    # a TorchScript version that answers the all-zero probe but fails on real inputs (a data-dependent bug)
    class FailsOnData(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(8, 4)

        def forward(self, x):
            if bool(x.abs().sum() > 0):
                raise RuntimeError("canary bug")
            return self.layer(x)

    bad = root / "bad-export"
    bad.mkdir()
    shutil.copy(exports["mlp"].path / "export.json", bad / "export.json")
    shutil.copy(exports["mlp"].path / "model.onnx", bad / "model.onnx")
    torch.jit.script(FailsOnData()).save(str(bad / "model.pt"))
    # a TorchScript version with the same signature and a much larger forward pass: a slow canary
    slow = root / "slow-export"
    slow.mkdir()
    shutil.copy(exports["mlp"].path / "export.json", slow / "export.json")
    shutil.copy(exports["mlp"].path / "model.onnx", slow / "model.onnx")
    heavy = torch.nn.Sequential(torch.nn.Linear(8, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096), torch.nn.ReLU(),
                                torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4)).eval()
    torch.jit.trace(heavy, torch.zeros(1, 8)).save(str(slow / "model.pt"))
    servers = LocalServers(root / "home")
    replica = servers.start(ServerOptions(repository=str(root / "repo"), name="prod", channel="production", http_port=free_port(),
                                          grpc_port=free_port(), metrics_port=free_port()))
    port = free_port()
    env = {**os.environ, "MLCTL_GATEWAY_ADMIN_KEYS": ADMIN_KEY, "MLCTL_REPOSITORY": str(root / "repo")}
    gateway = subprocess.Popen([MLCTL, "gateway", "serve", "--port", str(port), "--triton-url", replica.grpc_url,
                                "--log", str(root / "log"), "--flush-rows", "200", "--flush-seconds", "0.3"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if call(url, "/healthz", key=None)[0] == 200:
                break
        except OSError:
            time.sleep(0.2)
        assert time.monotonic() < deadline
    env = {"MLCTL_REPOSITORY": str(root / "repo"), "MLCTL_TARGETS_PRODUCTION": replica.grpc_url, "MLCTL_PREDICTION_LOG": str(root / "log")}
    try:
        yield {"root": root, "repo": Repository(open_store(str(root / "repo"))), "replica": replica, "url": url, "env": env,
               "bad": ExportBundle.load(bad), "slow": ExportBundle.load(slow), "good": exports["mlp"]}
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)
        servers.stop("prod", grace_s=10)


def prepare(stage, name: str) -> None:
    """TorchScript v1 and v2 good, v3 failing on real inputs, v4 slow; production at v1."""
    repo = stage["repo"]
    for bundle in (stage["good"], stage["good"], stage["bad"], stage["slow"]):
        repo.publish(bundle, name, "torchscript", ServingOptions())
    Lifecycle(repo, Targets({"production": (stage["replica"].grpc_url,)})).promote(name, 1, "production")


class Traffic:
    """Requests through the gateway until stopped; counts answers per version and failures."""

    def __init__(self, url: str, model: str, threads: int = 4) -> None:
        self.url, self.model = url, model
        self.versions: dict[str, int] = {}
        self.failures = 0
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(threads)]

    def loop(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            status, body = call(self.url, f"/v1/models/{self.model}/predict", ROW, key=ADMIN_KEY)
            with self.lock:
                if status == 200:
                    self.versions[body["version"]] = self.versions.get(body["version"], 0) + 1
                else:
                    self.failures += 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)


def test_bad_input_is_refused_and_changes_nothing(stage):
    prepare(stage, "cbad")
    env = stage["env"]
    weight = run_mlctl("canary", "start", "cbad", "2", "--weight", "150", env=env)
    assert weight.returncode == 2 and "between 0 and 100" in weight.stderr
    unknown = run_mlctl("canary", "start", "cbad", "9", "--weight", "10", env=env)
    assert unknown.returncode == 3 and "version 9" in unknown.stderr
    assert run_mlctl("canary", "start", "cbad", "2", "--weight", "10", env=env).returncode == 0
    second = run_mlctl("canary", "start", "cbad", "2", "--weight", "10", env=env)
    assert second.returncode == 4 and "already has a running canary" in second.stderr
    assert run_mlctl("canary", "abort", "cbad", env=env).returncode == 0
    assert json.loads(run_mlctl("canary", "status", "cbad", "--json", env=env).stdout)["status"] == "aborted"


def test_split_follows_the_weight_and_direct_requests_stay_on_stable(stage):
    prepare(stage, "csplit")
    env = stage["env"]
    assert run_mlctl("canary", "start", "csplit", "2", "--weight", "30", env=env).returncode == 0
    time.sleep(1.2)  # the gateway re-reads canary state every second
    counts: dict[str, int] = {}
    for _ in range(2000):
        status, body = call(stage["url"], "/v1/models/csplit/predict", ROW, key=ADMIN_KEY)
        assert status == 200
        counts[body["version"]] = counts.get(body["version"], 0) + 1
    share = counts.get("2", 0) / 2000
    print(f"\nsplit at weight 30: {counts} -> canary share {share:.4f}")
    assert abs(share - 0.30) <= 0.02, counts
    with TritonClient(stage["replica"].grpc_url) as client:  # unversioned, straight to Triton: stable
        assert {client.infer("csplit", {"x": np.zeros((1, 8), np.float32)}).version for _ in range(20)} == {"1"}
    assert run_mlctl("canary", "abort", "csplit", env=env).returncode == 0


def test_a_failing_canary_is_aborted_automatically(stage):
    prepare(stage, "cfail")
    env = stage["env"]
    with Traffic(stage["url"], "cfail") as traffic:
        result = run_mlctl("canary", "start", "cfail", "3", "--steps", "20,50,100", "--interval", "2s", "--min-requests", "20",
                           "--max-seconds", "60", env=env)
        assert result.returncode == 6, result.stdout + result.stderr
        with traffic.lock:
            failed_before, answered_before = traffic.failures, sum(traffic.versions.values())
        time.sleep(1.5)  # after the abort, and the gateway's next read of the canary state
        with traffic.lock:
            failed_mark = traffic.failures
        time.sleep(2.0)
    assert traffic.failures == failed_mark  # none after the abort
    total = failed_before + answered_before
    print(f"\nfailing canary: {failed_before} of {total} requests failed before the abort, {traffic.failures - failed_mark} after")
    assert 0 < failed_before <= 0.2 * total + 10  # only the canary's own share failed
    state = json.loads(run_mlctl("canary", "status", "cfail", "--json", env=env).stdout)
    assert state["status"] == "aborted" and state["weight"] == 0
    history = json.loads(run_mlctl("history", "cfail", "--json", env=env).stdout)["history"]
    abort = [h for h in history if h["action"] == "canary-abort"][-1]
    assert "error rate" in abort["detail"] and "evidence" in abort["detail"]
    assert json.loads(run_mlctl("status", "cfail", "--json", env=env).stdout)["channels"]["production"]["version"] == 1


def test_a_good_canary_promotes_itself(stage):
    prepare(stage, "cgood")
    env = stage["env"]
    with Traffic(stage["url"], "cgood"):
        result = run_mlctl("canary", "start", "cgood", "2", "--steps", "50,100", "--interval", "2s", "--min-requests", "20",
                           "--max-seconds", "60", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(run_mlctl("canary", "status", "cgood", "--json", env=env).stdout)["status"] == "promoted"
    assert json.loads(run_mlctl("status", "cgood", "--json", env=env).stdout)["channels"]["production"]["version"] == 2
    actions = [h["action"] for h in json.loads(run_mlctl("history", "cgood", "--json", env=env).stdout)["history"]]
    assert actions[:2] == ["promote", "canary-start"] and "canary-step" in actions and actions[-2:] == ["promote", "canary-promote"]
    assert not Path(stage["root"] / "repo" / "cgood.canary").exists()


def test_a_slow_canary_is_aborted_on_latency(stage):
    prepare(stage, "cslow")
    env = stage["env"]
    with Traffic(stage["url"], "cslow") as traffic:
        result = run_mlctl("canary", "start", "cslow", "4", "--steps", "30,100", "--interval", "3s", "--min-requests", "20",
                           "--max-seconds", "60", env=env)
    assert result.returncode == 6, result.stdout + result.stderr
    assert traffic.failures == 0  # slow, not failing: every client got its answer
    abort = [h for h in json.loads(run_mlctl("history", "cslow", "--json", env=env).stdout)["history"] if h["action"] == "canary-abort"][-1]
    assert "p99" in abort["detail"]
    assert json.loads(run_mlctl("status", "cslow", "--json", env=env).stdout)["channels"]["production"]["version"] == 1


def test_shadow_mode_answers_from_stable_and_still_judges_the_canary(stage):
    prepare(stage, "cshadow")
    env = stage["env"]
    assert run_mlctl("canary", "start", "cshadow", "2", "--shadow", "--weight", "100", "--min-requests", "20", env=env).returncode == 0
    time.sleep(1.2)  # the gateway's next read of the canary state
    with Traffic(stage["url"], "cshadow") as traffic:
        time.sleep(3.0)
    assert traffic.failures == 0 and set(traffic.versions) == {"1"}  # every answer came from stable
    time.sleep(0.6)  # the log's flush interval
    judged = run_mlctl("canary", "step", "cshadow", "--json", env=env)
    assert judged.returncode == 0, judged.stdout + judged.stderr
    state = json.loads(judged.stdout)
    assert state["status"] == "promoted"
    evidence = state["decisions"][-1]["evidence"]
    assert evidence["canary"]["requests"] >= 20 and evidence["canary"]["errors"] == 0  # the mirrored requests
