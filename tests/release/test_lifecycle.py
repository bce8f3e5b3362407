"""Promote, rollback, status, history and reconcile against two real tritonserver replicas of one
channel, on a local repository and on S3 (a real S3-compatible server). scripts/switch_load_test.py runs
the long version: three replicas, twenty cycles."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support import free_port, new_s3_uri, run_mlctl

from controlplane.errors import (
    CheckFailedError,
    ConflictError,
    NotFoundError,
    ServerError,
    UnavailableError,
    UsageError,
)
from controlplane.model.bundle import ExportBundle
from controlplane.model.config import ServingOptions
from controlplane.release.lifecycle import Lifecycle, channel_config_key
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.load import Endpoint, Load, Switch, judge_switches
from controlplane.triton.replicas import Replica
from controlplane.triton.server.local import LocalServers, ServerOptions
from controlplane.triton.server.state import ServerState
from controlplane.triton.targets import Targets

pytestmark = pytest.mark.e2e
X = {"x": np.zeros((1, 8), np.float32)}


@dataclass
class Fleet:
    kind: str
    uri: str
    servers: LocalServers
    states: list[ServerState]
    options: list[ServerOptions]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(s.grpc_url for s in self.states)


# Tests of what the store keeps (audit history, compare-and-swap, checksums, channel state) run on both stores;
# tests of how replicas switch run on the local one only: the switch itself does not touch the store
LOCAL_ONLY = pytest.mark.parametrize("fleet", ["local"], indirect=True)


@pytest.fixture(scope="module", params=["local", "s3"])
def fleet(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "s3":
            for key, value in request.getfixturevalue("s3_server").items():
                mp.setenv(key, value)
            uri = new_s3_uri()
        else:
            uri = str(tmp_path_factory.mktemp("fleet-repo"))
        servers = LocalServers(tmp_path_factory.mktemp("fleet-home"))
        options = [
            ServerOptions(repository=uri, name=f"r{i}", channel="production", http_port=free_port(),
                          grpc_port=free_port(), metrics_port=free_port(), exit_timeout_s=3)
            for i in range(2)
        ]
        if request.param == "local":
            Path(uri).mkdir(exist_ok=True)
        states = [servers.start(o) for o in options]
        fleet = Fleet(request.param, uri, servers, states, options)
        try:
            yield fleet
        finally:
            servers.stop_many([option.name for option in options], grace_s=10)


@pytest.fixture
def ctx(fleet, request, monkeypatch):
    if fleet.kind == "s3":
        fleet.env = request.getfixturevalue("s3_server")
        for key, value in fleet.env.items():
            monkeypatch.setenv(key, value)
    return fleet


def ctx_env(fleet) -> dict:
    return getattr(fleet, "env", {})


def repository(fleet: Fleet) -> Repository:
    return Repository(open_store(fleet.uri))


def lifecycle(fleet: Fleet, urls: tuple[str, ...] | None = None, key: str | None = None) -> Lifecycle:
    return Lifecycle(repository(fleet), Targets({"production": fleet.urls if urls is None else urls}), key)


def publish(fleet: Fleet, bundle: ExportBundle, name: str, count: int) -> list[int]:
    repo = repository(fleet)
    return [repo.publish(bundle, name, "onnx", ServingOptions()).version for _ in range(count)]


def served(fleet: Fleet, model: str) -> list[set[int]]:
    result = []
    for url in fleet.urls:
        replica = Replica(url)
        result.append(replica.served(model))
        replica.close()
    return result


def answered_by(url: str, model: str) -> str:
    with TritonClient(url) as client:
        return client.infer(model, X).version


def test_promote_reaches_every_replica_and_is_audited(ctx, exports):
    publish(ctx, exports["mlp"], "promo", 2)
    lc = lifecycle(ctx)
    report = lc.promote("promo", 1, "production", "first release")
    assert report.outcome == "succeeded" and [r["url"] for r in report.replicas] == list(ctx.urls)
    assert served(ctx, "promo") == [{1}] * len(ctx.urls)
    lc.promote("promo", 2, "production")
    assert served(ctx, "promo") == [{2}] * len(ctx.urls)
    lc.rollback("promo", "production", reason="bad metrics")
    assert served(ctx, "promo") == [{1}] * len(ctx.urls)
    history = lc.history("promo")
    assert [(h.action, h.from_version, h.to_version, h.outcome) for h in history] == [
        ("promote", None, 1, "succeeded"), ("promote", 1, 2, "succeeded"), ("rollback", 2, 1, "succeeded"),
    ]
    assert history[0].reason == "first release" and history[2].reason == "bad metrics" and history[0].user
    status = lc.status("promo")
    assert status["channels"]["production"]["version"] == 1
    assert all(r["in_sync"] for r in status["channels"]["production"]["replicas"])
    config = repository(ctx).store.read_bytes(channel_config_key("promo", "production")).decode()
    assert "specific" in config and "versions: 1" in config


@LOCAL_ONLY
def test_unversioned_requests_get_the_promoted_version_not_the_newest(ctx, exports):
    publish(ctx, exports["mlp"], "pinned", 1)
    lifecycle(ctx).promote("pinned", 1, "production")
    publish(ctx, exports["mlp"], "pinned", 2)  # versions 2 and 3 exist but are not promoted
    assert {answered_by(url, "pinned") for url in ctx.urls} == {"1"}
    assert served(ctx, "pinned") == [{1}] * len(ctx.urls)


@LOCAL_ONLY
def test_switches_under_load_fail_no_request(ctx, exports):
    v1, v2 = publish(ctx, exports["mlp"], "busy", 2)
    lc = lifecycle(ctx)
    lc.promote("busy", v1, "production")
    endpoints = [Endpoint(s.grpc_url, s.http_url) for s in ctx.states]
    load = Load("busy", lambda: X, endpoints, clients=8, max_seconds=120).start()
    time.sleep(0.5)
    switches = []
    for action, version in (("promote", v2), ("rollback", v1)):
        t0 = time.monotonic()
        lc.promote("busy", version, "production") if action == "promote" else lc.rollback("busy", "production")
        switches.append(Switch(str(version), t0, time.monotonic()))
    time.sleep(0.3)
    verdict = judge_switches(load.stop(), switches, {str(v1), str(v2)})
    assert verdict["requests"] > 500
    assert verdict["failures"] == 0, verdict["failure_examples"]
    assert verdict["unexpected_versions"] == 0
    assert verdict["old_version_after_switch"] == 0
    assert set(verdict["by_protocol"]) == {"grpc", "http"}


@LOCAL_ONLY
def test_a_replica_that_fails_to_load_aborts_and_reverts(ctx, exports, tmp_path):
    (good,) = publish(ctx, exports["mlp"], "fragile", 1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "export.json").write_text((exports["mlp"].path / "export.json").read_text())
    (broken / "model.onnx").write_bytes(b"this is not an onnx graph")
    (broken / "model.pt").write_bytes(b"")
    bad = repository(ctx).publish(ExportBundle.load(broken), "fragile", "onnx", ServingOptions()).version
    lc = lifecycle(ctx)
    lc.promote("fragile", good, "production")
    with pytest.raises(ServerError, match=rf"(?s)aborted: replica {ctx.urls[0]} failed.*INVALID_PROTOBUF.*reverted 1 replica\(s\); channel 'production' unchanged at version {good}"):
        lc.promote("fragile", bad, "production")
    assert served(ctx, "fragile") == [{good}] * len(ctx.urls)
    state = lc.status("fragile")
    assert state["channels"]["production"]["version"] == good and state["pending"] is None
    last = lc.history("fragile")[-1]
    assert (last.action, last.to_version, last.outcome) == ("promote", bad, "failed") and "failed" in last.detail
    assert f"versions: {good}" in repository(ctx).store.read_bytes(channel_config_key("fragile", "production")).decode()


def test_tampered_version_is_refused(ctx, exports):
    v1, v2 = publish(ctx, exports["mlp"], "tamper", 2)
    lc = lifecycle(ctx)
    lc.promote("tamper", v1, "production")
    repository(ctx).store.write_bytes(f"tamper/{v2}/model.onnx", b"swapped weights")
    with pytest.raises(CheckFailedError, match=r"files do not match the manifest \(model.onnx: sha256 differs"):
        lc.promote("tamper", v2, "production")
    assert served(ctx, "tamper") == [{v1}] * len(ctx.urls) and len(lc.history("tamper")) == 1


def test_concurrent_promotes_exactly_one_wins(ctx, exports):
    v1, v2 = publish(ctx, exports["mlp"], "race", 2)
    outcomes: dict[int, object] = {}
    barrier = threading.Barrier(2)

    def attempt(version):
        barrier.wait()
        try:
            outcomes[version] = lifecycle(ctx).promote("race", version, "production")
        except ConflictError as exc:
            outcomes[version] = exc

    threads = [threading.Thread(target=attempt, args=(v,)) for v in (v1, v2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, o in outcomes.items() if not isinstance(o, Exception)]
    losers = [o for o in outcomes.values() if isinstance(o, ConflictError)]
    assert len(winners) == 1 and len(losers) == 1
    assert served(ctx, "race") == [{winners[0]}] * len(ctx.urls)
    assert [h.to_version for h in lifecycle(ctx).history("race")] == winners


def test_a_restarted_replica_comes_back_on_the_promoted_version(ctx, exports):
    v1, v2 = publish(ctx, exports["mlp"], "phoenix", 2)
    lc = lifecycle(ctx)
    lc.promote("phoenix", v1, "production")
    lc.promote("phoenix", v2, "production")
    lc.rollback("phoenix", "production")  # desired: v1, while v2 is the newest
    victim = ctx.states[1]
    os.kill(victim.pid, signal.SIGKILL)  # a crash: no graceful stop
    deadline = time.monotonic() + 10
    while ctx.servers.running(victim.name) and time.monotonic() < deadline:
        time.sleep(0.1)
    ctx.states[1] = ctx.servers.start(ctx.options[1])  # what an orchestrator does; no mlctl step after it
    assert served(ctx, "phoenix")[1] == {v1}
    assert answered_by(ctx.states[1].grpc_url, "phoenix") == str(v1)


def test_reconcile_repairs_drift_and_reports_it(ctx, exports):
    v1, v2 = publish(ctx, exports["mlp"], "drift", 2)
    lc = lifecycle(ctx)
    lc.promote("drift", v1, "production")
    from controlplane.model import config as model_config

    config = repository(ctx).config("drift")
    model_config.apply_version_policy(config, model_config.VersionPolicy("specific", (v2,)))
    replica = Replica(ctx.urls[-1])
    replica.load("drift", model_config.to_json(config))  # someone loads v2 by hand on one replica
    replica.close()
    assert not lc.status("drift")["channels"]["production"]["replicas"][-1]["in_sync"]
    result = lc.reconcile(["drift"])
    assert result["errors"] == []
    assert result["changes"] == [{"model": "drift", "channel": "production", "replica": ctx.urls[-1], "was": [v2], "now": v1}]
    assert served(ctx, "drift") == [{v1}] * len(ctx.urls)
    assert lc.reconcile(["drift"])["changes"] == []


@LOCAL_ONLY
def test_bad_input_is_refused_and_changes_nothing(ctx, exports):
    v1, v2 = publish(ctx, exports["mlp"], "strict", 2)
    lc = lifecycle(ctx)
    lc.promote("strict", v1, "production")
    store = repository(ctx).store
    before = store.read_versioned(".mlctl/channels/strict.json")
    with pytest.raises(NotFoundError, match="version 9 of model 'strict' not found"):
        lc.promote("strict", 9, "production")
    with pytest.raises(NotFoundError, match="has no channel 'staging'"):
        lc.rollback("strict", "staging")
    with pytest.raises(NotFoundError, match="no earlier version to roll back to"):
        lc.rollback("strict", "production")
    with pytest.raises(UsageError, match="channel name"):
        lc.promote("strict", v2, "Prod!")
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(UnavailableError, match=f"{dead} not reachable; nothing was changed"):
        lifecycle(ctx, (*ctx.urls, dead)).promote("strict", v2, "production")
    assert store.read_versioned(".mlctl/channels/strict.json") == before
    assert served(ctx, "strict") == [{v1}] * len(ctx.urls)


@LOCAL_ONLY
def test_cli_commands_and_exit_codes(ctx, exports):
    v1, v2 = publish(ctx, exports["mlp"], "cli", 2)
    env = {"MLCTL_REPOSITORY": ctx.uri, "MLCTL_TARGETS_PRODUCTION": ",".join(ctx.urls)}
    out = json.loads(run_mlctl("promote", "cli", str(v1), "--to", "production", "--reason", "ship", "--json", env=env).stdout)
    assert out["outcome"] == "succeeded" and out["to_version"] == v1
    assert run_mlctl("promote", "cli", str(v2), "--to", "production", env=env).returncode == 0
    status = run_mlctl("status", "cli", "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["channels"]["production"]["version"] == v2
    rolled = run_mlctl("rollback", "cli", env=env)
    assert rolled.returncode == 0 and f"{v2} -> {v1}" in rolled.stdout
    history = json.loads(run_mlctl("history", "cli", "--json", env=env).stdout)["history"]
    assert [h["action"] for h in history] == ["promote", "promote", "rollback"]
    missing = run_mlctl("promote", "cli", "42", "--to", "production", env=env)
    assert missing.returncode == 3 and "version 42 of model 'cli' not found" in missing.stderr
    no_channel = run_mlctl("rollback", "cli", "--channel", "qa", env=env)
    assert no_channel.returncode == 3 and "no channel 'qa'" in no_channel.stderr
    down = run_mlctl("promote", "cli", str(v2), "--to", "production", env={**env, "MLCTL_TARGETS_PRODUCTION": f"127.0.0.1:{free_port()}"})
    assert down.returncode == 5 and "nothing was changed" in down.stderr


@pytest.mark.parametrize("fleet", ["s3"], indirect=True)
def test_bad_s3_credentials_are_a_clear_error(ctx, exports, monkeypatch):
    before = run_mlctl("-r", ctx.uri, "model", "list", "--json")
    assert before.returncode == 0, before.stderr
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    refused = run_mlctl("-r", ctx.uri, "publish", str(exports["mlp"].path), "-n", "creds", "-f", "onnx")
    assert refused.returncode == 2 and "S3 refused" in refused.stderr and "check AWS_ACCESS_KEY_ID" in refused.stderr
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    unknown = run_mlctl("-r", ctx.uri, "promote", "promo", "2", "--to", "production")
    assert unknown.returncode == 2 and "S3 refused" in unknown.stderr
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    down = run_mlctl("-r", ctx.uri, "model", "list")
    assert down.returncode == 5 and "not reachable" in down.stderr
    monkeypatch.undo()
    for key, value in ctx_env(ctx).items():
        monkeypatch.setenv(key, value)
    assert run_mlctl("-r", ctx.uri, "model", "list", "--json").stdout == before.stdout  # nothing changed


def test_restricted_control_api_needs_the_key(tmp_path, exports):
    repo_dir = tmp_path / "repo"
    repo_dir.mkdir()
    repo = Repository(open_store(str(repo_dir)))
    v1, v2 = [repo.publish(exports["mlp"], "locked", "onnx", ServingOptions()).version for _ in range(2)]
    servers = LocalServers(tmp_path / "home")
    state = servers.start(ServerOptions(repository=str(repo_dir), name="locked", channel="production", control_key="s3cret",
                                        http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()))
    try:
        assert "s3cret" not in json.dumps(state.to_dict())  # the key is not written to the state file
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        raw = grpcclient.InferenceServerClient(state.grpc_url)
        with pytest.raises(InferenceServerException):
            raw.load_model("locked")  # no key: refused by Triton itself
        raw.close()
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as http_refusal:
            urllib.request.urlopen(urllib.request.Request(f"http://{state.http_url}/v2/repository/models/locked/load", method="POST", data=b"{}"))
        assert http_refusal.value.code == 403
        targets = Targets({"production": (state.grpc_url,)})
        with pytest.raises(UsageError, match="needs the control key and none was given"):
            Lifecycle(repo, targets).promote("locked", v1, "production")
        with pytest.raises(UsageError, match=r"does not accept the control key given \(wrong key\)"):
            Lifecycle(repo, targets, "guess").promote("locked", v1, "production")
        assert Lifecycle(repo, targets, "s3cret").promote("locked", v2, "production").outcome == "succeeded"
        with TritonClient(state.grpc_url) as client:  # inference stays open
            assert client.infer("locked", X).version == str(v2)
        # without the key the replica is up, not "unreachable": status and health say what is refused
        env = {"MLCTL_REPOSITORY": str(repo_dir), "MLCTL_TARGETS_PRODUCTION": state.grpc_url}
        for key, shown in ((None, "key refused: none given"), ("guess", "key refused: wrong key")):
            key_env = {**env, **({"MLCTL_CONTROL_KEY": key} if key else {})}
            status = run_mlctl("status", "locked", env=key_env)
            assert status.returncode == 1 and shown in status.stdout and "unreachable" not in status.stdout
            replica = json.loads(run_mlctl("status", "locked", "--json", env=key_env).stdout)["channels"]["production"]["replicas"][0]
            assert replica["reachable"] is True and replica["key"] == ("wrong" if key else "missing")
            health = run_mlctl("health", "--url", state.grpc_url, "--json", env=key_env)
            assert health.returncode == 1, health.stderr
            checks = {c["name"]: c for c in json.loads(health.stdout)["checks"]}
            assert checks[f"triton {state.grpc_url} live"]["ok"] and checks[f"triton {state.grpc_url} ready"]["ok"]
            control = checks[f"triton {state.grpc_url} control API"]
            assert not control["ok"] and ("wrong control key" if key else "no control key given") in control["detail"]
        healthy = run_mlctl("health", "--url", state.grpc_url, "--json", env={**env, "MLCTL_CONTROL_KEY": "s3cret"})
        assert healthy.returncode == 0, healthy.stdout
        status = run_mlctl("status", "locked", env={**env, "MLCTL_CONTROL_KEY": "s3cret"})
        assert status.returncode == 0 and "in sync" in status.stdout
        # the key stays out of what mlctl writes: the state file, the log it keeps for the server
        assert "s3cret" not in Path(state.log_path).read_text()
        # Triton lists every folder of the repository in its index, .mlctl too; mlctl's own listings skip it
        index = {m["name"] for m in Replica(state.grpc_url, "s3cret").index()}
        assert {"locked", ".mlctl"} <= index, index
        assert not [c for c in json.loads(healthy.stdout)["checks"] if ".mlctl" in c["name"]]
    finally:
        servers.stop("locked", grace_s=10)


@LOCAL_ONLY
def test_a_mistyped_channel_is_refused_and_a_channel_can_be_removed(ctx, exports):
    (v1,) = publish(ctx, exports["mlp"], "typo", 1)
    env = {**ctx_env(ctx), "MLCTL_REPOSITORY": ctx.uri, "MLCTL_TARGETS_PRODUCTION": ",".join(ctx.urls)}
    store = repository(ctx).store
    refused = run_mlctl("promote", "typo", str(v1), "--to", "prodution", env=env)
    assert refused.returncode == 2, refused.stderr
    assert "channel 'prodution' is not configured" in refused.stderr and "did you mean 'production'?" in refused.stderr
    assert refused.stdout == ""
    assert store.read_versioned(".mlctl/channels/typo.json") == (None, None)  # nothing written
    assert store.read_versioned(channel_config_key("typo", "prodution")) == (None, None)
    # asked for explicitly, a new channel (no replicas yet) is created, and it can be removed again
    created = run_mlctl("promote", "typo", str(v1), "--to", "qa", "--create-channel", "--json", env=env)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["to_version"] == v1
    assert run_mlctl("promote", "typo", str(v1), "--to", "qa", env=env).returncode == 0  # it exists now
    kept = run_mlctl("channel", "remove", "typo", "production", env=env)
    assert kept.returncode == 3 and "has no channel 'production' to remove" in kept.stderr
    removed = run_mlctl("channel", "remove", "typo", "qa", "--reason", "typo", "--json", env=env)
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["action"] == "remove" and json.loads(removed.stdout)["from_version"] == v1
    status = json.loads(run_mlctl("status", "typo", "--json", env=env).stdout)
    assert "qa" not in status["channels"] and status["problems"] == []
    history = json.loads(run_mlctl("history", "typo", "--json", env=env).stdout)["history"]
    assert [(h["action"], h["channel"], h["to_version"]) for h in history] == [("promote", "qa", v1), ("remove", "qa", None)]
    assert store.read_versioned(channel_config_key("typo", "qa")) == (None, None)
    text = run_mlctl("history", "typo", env=env).stdout
    assert "None" not in text and f"- -> {v1}" in text and f"{v1} -> -" in text
    # a channel with replicas in the targets stays: removing it would leave them serving unrecorded
    lifecycle(ctx).promote("typo", v1, "production")
    busy = run_mlctl("channel", "remove", "typo", "production", env=env)
    assert busy.returncode == 4 and "has replicas in the targets" in busy.stderr


@LOCAL_ONLY
def test_ctrl_c_during_a_promote_exits_130_and_reconcile_closes_it(ctx, exports):
    import subprocess

    from support import MLCTL, TESTS

    v1, v2 = publish(ctx, exports["mlp"], "sigint", 2)
    lifecycle(ctx).promote("sigint", v1, "production")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "MLCTL_REPOSITORY": ctx.uri, "MLCTL_TARGETS_PRODUCTION": ",".join(ctx.urls)}
    state_file = Path(ctx.uri) / ".mlctl" / "channels" / "sigint.json"
    hung = ctx.states[1].pid
    proc = subprocess.Popen([MLCTL, "promote", "sigint", str(v2), "--to", "production"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from support import wait_until

        wait_until(lambda: json.loads(state_file.read_text())["pending"] is not None, 60, "the promote to record itself pending",
                   give_up=lambda: proc.poll() is not None and "the promote exited", poll_s=0.005)
        # the second replica is held (SIGSTOP) so the switch cannot finish before the interrupt, however fast it is
        os.kill(hung, signal.SIGSTOP)
        time.sleep(0.3)  # the promote reaches the held replica
        proc.send_signal(signal.SIGINT)  # mid-switch: the replicas are loading version 2
        out, err = proc.communicate(timeout=60)
    finally:
        os.kill(hung, signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 130, err
    assert "ServerError" not in err and "failed to start" not in err
    assert "interrupted: promote of sigint production" in err and "mlctl reconcile sigint" in err
    pending = json.loads(state_file.read_text())["pending"]
    assert pending["to_version"] == v2  # left for reconcile, not finished as failed
    env_cli = {"MLCTL_REPOSITORY": ctx.uri, "MLCTL_TARGETS_PRODUCTION": ",".join(ctx.urls)}
    reconciled = run_mlctl("reconcile", "sigint", "--json", env=env_cli)
    assert reconciled.returncode == 0, reconciled.stderr
    assert json.loads(reconciled.stdout)["changes"][0]["what"] == "interrupted operation closed"
    assert served(ctx, "sigint") == [{v1}] * len(ctx.urls)
    assert lifecycle(ctx).history("sigint")[-1].outcome == "interrupted"
    assert run_mlctl("status", "sigint", env=env_cli).returncode == 0
