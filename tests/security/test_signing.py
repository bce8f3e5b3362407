"""Signed versions and the repository's signature policy, against a real tritonserver replica of a channel, on a
local repository and on S3: the attack a manifest's sha256 misses (replace a model file, recompute the manifest),
untrusted keys, unsigned versions, key rotation, a replica starting on a tampered channel, and the exact count
of security events each refusal records."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from support import free_port, new_s3_uri, run_mlctl

from controlplane.errors import SignatureError, UsageError
from controlplane.model.config import ServingOptions
from controlplane.model.manifest import MANIFEST, sha256_bytes
from controlplane.release.lifecycle import Lifecycle
from controlplane.security import events
from controlplane.security.enforce import check_version, sign_version
from controlplane.security.policy import PolicyStore
from controlplane.security.signing import SIGNATURE, KeyPair, generate_keys
from controlplane.store import open_store
from controlplane.store.channel_store import ChannelStore
from controlplane.store.repository import Repository
from controlplane.triton.replicas import Replica
from controlplane.triton.server.local import LocalServers, ServerOptions
from controlplane.triton.targets import Targets

pytestmark = pytest.mark.e2e
MODEL = "signed"


def tamper(repo: Repository, model: str, version: int) -> None:
    """The attack: a different but valid model file, and a manifest recomputed to match it."""
    import onnx
    from onnx import numpy_helper

    key = f"{model}/{version}/model.onnx"
    graph = onnx.load_from_string(repo.store.read_bytes(key))
    weights = graph.graph.initializer[0]
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) + 1.0, weights.name))
    data = graph.SerializeToString()
    repo.store.write_bytes(key, data)
    manifest = repo.manifest(model, version)
    files = {**manifest.files, "model.onnx": {"sha256": sha256_bytes(data), "size": len(data)}}
    repo.store.write_bytes(f"{model}/{version}/{MANIFEST}", replace(manifest, files=files).to_json().encode())
    assert repo.verify(model, version) == []  # sha256 alone sees nothing wrong


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("keys")
    pairs = {name: generate_keys(folder, name) for name in ("team", "stranger")}
    made = run_mlctl("keys", "generate", "--out", str(folder), "--name", "rotated", "--json")
    assert made.returncode == 0, made.stderr
    rotated = json.loads(made.stdout)
    pairs["rotated"] = KeyPair(Path(rotated["private_key"]), Path(rotated["public_key"]), rotated["fingerprint"])
    assert (pairs["rotated"].private_path.stat().st_mode & 0o777) == 0o600
    return pairs


@pytest.fixture(scope="module")
def replica(tmp_path_factory, exports, keys):
    """A local repository with signed, tampered and unsigned versions, and one real replica of `production`."""
    root = tmp_path_factory.mktemp("signed-repo")
    repo = Repository(open_store(str(root)))
    bundle, team = exports["mlp"], keys["team"].private_path
    for sign_key in (team, team, keys["stranger"].private_path, None, team):  # versions 1..5
        repo.publish(bundle, MODEL, "onnx", ServingOptions(warmup=False), sign_key=sign_key)
    servers = LocalServers(tmp_path_factory.mktemp("signed-home"))
    options = ServerOptions(repository=str(root), name="prod", channel="production", http_port=free_port(),
                            grpc_port=free_port(), metrics_port=free_port(), exit_timeout_s=3)
    state = servers.start(options)
    targets = tmp_path_factory.mktemp("targets") / "mlctl.toml"
    targets.write_text(f'[channels.production]\nreplicas = ["{state.grpc_url}"]\n')
    try:
        yield {"repo": repo, "bundle": bundle, "root": root, "state": state, "targets": targets, "servers": servers, "options": options}
    finally:
        servers.stop("prod", grace_s=10)


def mlctl(replica, *args: str):
    return run_mlctl("-r", str(replica["root"]), "--targets", str(replica["targets"]), *args)


def served(replica) -> set[int]:
    remote = Replica(replica["state"].grpc_url)
    try:
        return remote.served(MODEL)
    finally:
        remote.close()


def refusal(repo: Repository, version: int) -> str:
    with pytest.raises(SignatureError) as refused:
        Lifecycle(repo, Targets({})).promote(MODEL, version, "production")
    assert refused.value.exit_code == 6 and f"version {version} on channel 'production'" in str(refused.value)
    return refused.value.reason


def test_policy_refuses_what_sha256_misses_and_rotation_works(replica, keys):
    repo, policies = replica["repo"], PolicyStore(replica["repo"].store)
    team, rotated = keys["team"], keys["rotated"]
    with pytest.raises(UsageError):  # no trusted key yet: no version could pass
        policies.load()[0].require("production", True)
    assert mlctl(replica, "policy", "trust", "production", str(team.public_path)).returncode == 0
    policy, token = policies.load()
    policies.save(policy.require("production", True), token)
    lifecycle = Lifecycle(repo, Targets({"production": (replica["state"].grpc_url,)}))
    lifecycle.promote(MODEL, 1, "production")
    assert served(replica) == {1}

    tamper(repo, MODEL, 2)
    refused = mlctl(replica, "promote", MODEL, "2", "--to", "production")
    assert refused.returncode == 6, refused.stderr
    assert f"'{MODEL}' version 2 on channel 'production'" in refused.stderr and "model.onnx" in refused.stderr
    assert "files changed after signing" in refused.stderr and refused.stdout == ""
    assert served(replica) == {1} and ChannelStore(repo.store).load(MODEL)[0].channels["production"] == 1
    # a channel without a policy takes the same tampered version: the signature is what catches it
    assert Lifecycle(repo, Targets({})).promote(MODEL, 2, "staging", create_channel=True).to_version == 2
    assert refusal(repo, 3) == "untrusted_key" and refusal(repo, 4) == "unsigned"
    with pytest.raises(SignatureError):  # re-signing does not launder a tampered version
        sign_version(repo, MODEL, 2, rotated.private_path)
    assert served(replica) == {1}
    assert events.counts(repo.store) == {("tampering_detected", "files_changed"): 2,
                                         ("signature_refused", "untrusted_key"): 1,
                                         ("signature_refused", "unsigned"): 1}

    # rotation: trust the new key, re-sign what is served and what comes next, then drop the old key
    policy, token = policies.load()
    policies.save(policy.trust("production", rotated.public_path.read_bytes(), "rotated"), token)
    signed = mlctl(replica, "sign", MODEL, "1", "--key", str(rotated.private_path))
    assert signed.returncode == 0, signed.stderr
    assert sign_version(repo, MODEL, 5, rotated.private_path) == rotated.fingerprint
    assert mlctl(replica, "policy", "untrust", "production", "team").returncode == 0
    shown = json.loads(mlctl(replica, "policy", "show", "--json").stdout)["channels"]["production"]
    assert shown == {"require_signature": True, "trusted_keys": [{"name": "rotated", "fingerprint": rotated.fingerprint}]}
    assert check_version(repo, MODEL, 1, "production", "promote").fingerprint == rotated.fingerprint
    assert repo.verify(MODEL, 1) == []  # re-signing left the files and the manifest as they were
    assert lifecycle.promote(MODEL, 5, "production").to_version == 5 and served(replica) == {5}
    old_key = repo.publish(replica["bundle"], MODEL, "onnx", ServingOptions(warmup=False), sign_key=team.private_path)
    assert refusal(repo, old_key.version) == "untrusted_key"  # the old key no longer passes
    assert events.counts(repo.store)[("signature_refused", "untrusted_key")] == 2


def test_replica_on_tampered_channel_refuses_to_start(replica, keys, tmp_path):
    repo = replica["repo"]
    served_version = ChannelStore(repo.store).load(MODEL)[0].channels["production"]
    tamper(repo, MODEL, served_version)
    before = events.counts(repo.store)
    home = tmp_path / "home"
    started = run_mlctl("--home", str(home), "-r", str(replica["root"]), "server", "start", "--name", "second",
                        "--channel", "production", "--http-port", str(free_port()), "--grpc-port", str(free_port()),
                        "--metrics-port", str(free_port()))
    assert started.returncode == 6, started.stderr
    assert f"start a replica serving '{MODEL}' version {served_version} on channel 'production'" in started.stderr
    assert LocalServers(home).running("second") is None
    after = events.counts(repo.store)
    assert after[("tampering_detected", "files_changed")] == before[("tampering_detected", "files_changed")] + 1


def test_s3_repository_policy_signatures_and_events(s3_env, exports, keys):
    repo = Repository(open_store(new_s3_uri()))
    team, stranger = keys["team"], keys["stranger"]
    v1 = repo.publish(exports["mlp"], "remote", "onnx", ServingOptions(), sign_key=team.private_path).version
    v2 = repo.publish(exports["mlp"], "remote", "onnx", ServingOptions(), sign_key=stranger.private_path).version
    assert SIGNATURE in repo.store.list_dir(f"remote/{v1}") and repo.verify("remote", v1) == []
    policies = PolicyStore(repo.store)
    policy, token = policies.load()
    policies.save(policy.trust("production", team.public_path.read_bytes(), "team").require("production", True), token)
    assert check_version(repo, "remote", v1, "production", "promote").ok
    with pytest.raises(SignatureError) as untrusted:
        check_version(repo, "remote", v2, "production", "promote")
    assert untrusted.value.reason == "untrusted_key" and untrusted.value.exit_code == 6
    tamper(repo, "remote", v1)
    with pytest.raises(SignatureError) as tampered:
        check_version(repo, "remote", v1, "production", "promote")
    assert tampered.value.reason == "files_changed"
    with pytest.raises(SignatureError):
        sign_version(repo, "remote", v1, team.private_path)
    assert check_version(repo, "remote", v1, "staging", "promote") is None  # no policy there: nothing checked
    assert events.counts(repo.store) == {("signature_refused", "untrusted_key"): 1,
                                         ("tampering_detected", "files_changed"): 2}
    assert [(e.action, e.version, e.channel) for e in events.recent(repo.store)] == [
        ("promote", v2, "production"), ("promote", v1, "production"), ("re-sign", v1, "")]


def test_publish_signs_from_the_environment_and_canary_start_obeys_the_policy(replica, keys, exports):
    repo, rotated = replica["repo"], keys["rotated"]
    published = run_mlctl("-r", str(replica["root"]), "publish", str(exports["mlp"].path), "--name", MODEL,
                          "--format", "onnx", "--json", env={"MLCTL_SIGNING_KEY": str(rotated.private_path)})
    assert published.returncode == 0, published.stderr
    version = json.loads(published.stdout)["version"]
    assert json.loads(published.stdout)["signed"] is True
    assert check_version(repo, MODEL, version, "production", "promote").fingerprint == rotated.fingerprint
    before = events.counts(repo.store)
    refused = mlctl(replica, "canary", "start", MODEL, "4", "--channel", "production")  # version 4 is unsigned
    assert refused.returncode == 6, refused.stderr
    assert f"refusing to start a canary of '{MODEL}' version 4 on channel 'production'" in refused.stderr
    assert repo.store.list_dir(f"{MODEL}.canary") == [] and repo.store.list_dir(".mlctl/canary") == []
    assert events.counts(repo.store)[("signature_refused", "unsigned")] == before[("signature_refused", "unsigned")] + 1
