"""Pipelines: pre -> model -> post published as one versioned unit and switched on a real Triton under load."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from support import free_port

from controlplane.errors import NotFoundError, ServerError, UsageError
from controlplane.export.exporter import ExportRequest, export_model
from controlplane.model.config import ServingOptions, VersionPolicy
from controlplane.model.signature import parse_tensor_spec
from controlplane.release.pipeline import switch_pipeline
from controlplane.store import open_store
from controlplane.store.channel_store import ChannelStore
from controlplane.store.pipelines import publish_pipeline, verify_pipeline
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.load import run_threads
from controlplane.triton.replicas import Replica
from controlplane.triton.server.local import LocalServers, ServerOptions

# each step version stamps the answer: pre k writes k into feature 0, post k reports k as `tag`
PRE = '''import numpy as np
INPUTS = ["raw:uint8:8"]
OUTPUTS = ["x:float32:8"]
def process(inputs):
    x = inputs["raw"].astype(np.float32) / 255.0
    x[:, 0] = {k}.0
    return {{"x": x}}
'''
POST = '''import numpy as np
INPUTS = ["y:float32:4"]
OUTPUTS = ["scores:float32:4", "tag:float32:1"]
def process(inputs):
    y = inputs["y"]
    return {{"scores": y, "tag": np.full((len(y), 1), {k}.0, np.float32)}}
'''
TESTS_ROOT = Path(__file__).resolve().parents[2]
RAW = np.arange(8, dtype=np.uint8).reshape(1, 8) * 30


def _linear(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(8, 4).eval()


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory):
    """Model `lin` v1 and v2 (different weights) and pipeline `pipe` v1 (pre1, lin v1, post1, with a reference of
    raw inputs whose labels are its own answers) and v2 (all 2, no reference)."""
    from controlplane.quality.reference import ReferenceSample

    root = tmp_path_factory.mktemp("pipeline-repo")
    repo = Repository(open_store(str(root)))
    work = tmp_path_factory.mktemp("pipeline-work")
    modules = {}
    for k in (1, 2):
        modules[k] = _linear(k)
        bundle = export_model(ExportRequest(f"linear seed {k}", (parse_tensor_spec("x:float32:8"),), work / f"e{k}", ("y",),
                                            formats=("onnx",)), model=modules[k])
        repo.publish(bundle, "lin", "onnx", ServingOptions(version_policy=VersionPolicy("all")), {})
        (work / f"pre{k}.py").write_text(PRE.format(k=k))
        (work / f"post{k}.py").write_text(POST.format(k=k))
        reference = None
        if k == 1:
            raw = np.random.default_rng(1).integers(0, 256, (60, 8)).astype(np.uint8)
            answers = _answers(modules[1], raw, pre=1)
            np.savez(work / "reference.npz", features=raw, predicted=answers, labels=answers)
            reference = ReferenceSample.read(work / "reference.npz")
        publish_pipeline(repo, "pipe", "lin", k, work / f"pre{k}.py", work / f"post{k}.py", {"note": f"v{k}"}, reference)
    return repo, modules, work


def _answers(module: torch.nn.Module, raw: np.ndarray, pre: int) -> np.ndarray:
    """The class pipeline (pre `pre`, `module`) answers for raw inputs, computed in eager PyTorch."""
    x = raw.astype(np.float32) / 255.0
    x[:, 0] = float(pre)
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy().argmax(axis=1)


def test_publish_writes_a_pinned_ensemble_and_a_manifest_covering_every_component(pipeline_repo):
    repo, _modules, _work = pipeline_repo
    assert repo.versions("pipe") == [1, 2]
    manifest = repo.manifest("pipe", 2)
    components = manifest.metadata["pipeline"]["components"]
    assert {c["model"]: c["version"] for c in components.values()} == {"pipe.pre": 2, "pipe.model": 2, "pipe.post": 2}
    assert set(components["pre"]["files"]) == {"model.py", "step.py"} and "model.onnx" in components["model"]["files"]
    assert manifest.metadata["pipeline"]["source_model"]["version"] == 2
    ensemble = repo.store.read_bytes("pipe/2/ensemble.pbtxt").decode()
    assert ensemble.count("model_version: 2") == 3 and 'platform: "ensemble"' in ensemble
    assert verify_pipeline(repo, "pipe", 2) == []
    # a changed step file is caught against the pipeline's manifest
    path = repo.store.root / "pipe.post" / "1" / "step.py"
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    try:
        assert verify_pipeline(repo, "pipe", 1) == ["pipe.post/1/step.py: sha256 differs from the pipeline manifest"]
    finally:
        path.write_text(original)


@pytest.mark.parametrize("pre, post, message", [
    ("def nothing():\n    pass\n", None, "does not define process"),
    ("raise RuntimeError('no tokenizer file')\n", None, "raised while loading: RuntimeError: no tokenizer file"),
    ('INPUTS = ["raw:uint8:8"]\nOUTPUTS = ["z:float32:8"]\ndef process(i):\n    return {"z": i["raw"]}\n', None,
     "does not produce model input 'x'"),
    (None, 'INPUTS = ["logits:float32:4"]\nOUTPUTS = ["s:float32:4"]\ndef process(i):\n    return {"s": i["logits"]}\n',
     "reads 'logits'"),
    ('INPUTS = ["raw:uint8:8"]\nOUTPUTS = ["x:float32:8"]\ndef process(i):\n    return {"x": i["raw"][:, :3]}\n', None,
     "has shape [2, 3]"),
])
def test_bad_step_files_are_refused_and_nothing_is_written(pipeline_repo, tmp_path, pre, post, message):
    repo, _modules, _work = pipeline_repo
    before = sorted(p.relative_to(repo.store.root) for p in repo.store.root.rglob("*"))
    paths = {}
    for role, text in (("pre", pre), ("post", post)):
        if text is not None:
            paths[role] = tmp_path / f"{role}.py"
            paths[role].write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)) as info:
        publish_pipeline(repo, "bad", "lin", 1, paths.get("pre"), paths.get("post"))
    assert info.value.exit_code == 2
    assert sorted(p.relative_to(repo.store.root) for p in repo.store.root.rglob("*")) == before


def test_missing_step_file_and_model_version_are_not_found(pipeline_repo, tmp_path):
    repo, _modules, work = pipeline_repo
    with pytest.raises(NotFoundError):
        publish_pipeline(repo, "bad", "lin", 1, tmp_path / "absent.py", None)
    with pytest.raises(NotFoundError):
        publish_pipeline(repo, "bad", "lin", 9, work / "pre1.py", None)


def _stamp(modules):
    """Which (pre, model, post) versions produced an answer, e.g. '111'; from the scores and the tag."""
    expected = {}
    for pre in (1, 2):
        x = RAW.astype(np.float32) / 255.0
        x[:, 0] = pre
        for model in (1, 2):
            with torch.no_grad():
                expected[(pre, model)] = modules[model](torch.from_numpy(x)).numpy()

    def classify(outputs) -> str:
        pre, model = min(expected, key=lambda key: float(np.abs(expected[key] - outputs["scores"]).max()))
        return f"{pre}{model}{int(outputs['tag'][0, 0])}"

    return classify


def test_switch_and_rollback_under_load_never_mix_versions(pipeline_repo, tmp_path):
    repo, modules, _work = pipeline_repo
    servers = LocalServers(tmp_path / "home")
    state = servers.start(ServerOptions(repository=repo.uri, name="pipe", models=(), http_port=free_port(),
                                        grpc_port=free_port(), metrics_port=free_port(), timeout_s=120, exit_timeout_s=5))
    replica = Replica(f"127.0.0.1:{state.grpc_port}")
    classify = _stamp(modules)
    try:
        first = switch_pipeline(repo, "pipe", 1, [replica])  # from nothing: loads v1 of everything
        assert first.from_version is None and replica.served("pipe") == {1}

        def make_caller(i: int):
            protocol, port = ("grpc", state.grpc_port) if i % 2 == 0 else ("http", state.http_port)
            client = TritonClient(f"127.0.0.1:{port}", protocol)
            return lambda: classify(client.infer("pipe", {"raw": RAW}).outputs)

        stop, out = threading.Event(), []
        load = threading.Thread(target=lambda: out.append(run_threads(make_caller, 8, 120, stop)))
        load.start()
        switches = []
        try:
            for target in (2, 1):  # promote, then roll back
                started = time.monotonic()
                switches.append((switch_pipeline(repo, "pipe", target, [replica]), started, time.monotonic()))
        finally:
            stop.set()
            load.join(timeout=60)
        records = out[0].records
        answers = {r.version for r in records if not r.error}
        assert [r.error for r in records if r.error] == []
        assert answers <= {"111", "222"}, answers  # never a new pre-processor with an old model, or any other mix
        assert "222" in answers and len(records) > 50
        assert replica.served("pipe") == {1} and replica.served("pipe.model") == {1}
        assert 'model_version: 1' in repo.store.read_bytes("pipe/config.pbtxt").decode()  # a restart serves v1
    finally:
        replica.close()
        servers.stop("pipe", grace_s=15)


def test_cli_publishes_the_digits_example_and_refuses_a_bad_step(tmp_path):
    from support import run_mlctl

    examples = TESTS_ROOT / "examples" / "digits_pipeline"
    repo = str(tmp_path / "repo")
    steps = ["--pre", str(examples / "normalise.py"), "--post", str(examples / "top_label.py")]
    assert run_mlctl("export", "controlplane.demo.digits:build_classifier", "-i", "pixels:float32:64", "--output",
                     "probabilities", "-f", "onnx", "-o", str(tmp_path / "e")).returncode == 0
    assert run_mlctl("-r", repo, "publish", str(tmp_path / "e"), "--name", "digits").returncode == 0
    (tmp_path / "bad.py").write_text("INPUTS = ['pixels_raw:uint8:64']\nOUTPUTS = ['pixels:float32:64']\n")
    bad = run_mlctl("-r", repo, "pipeline", "publish", "digits_pipeline", "--model", "digits", "--model-version", "1",
                    "--pre", str(tmp_path / "bad.py"))
    assert bad.returncode == 2 and "does not define process" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "repo" / "digits_pipeline").exists() and not (tmp_path / "repo" / "digits_pipeline.pre").exists()
    good = run_mlctl("-r", repo, "pipeline", "publish", "digits_pipeline", "--model", "digits", "--model-version", "1",
                     *steps, "--json")
    assert good.returncode == 0, good.stderr
    manifest = json.loads(good.stdout)
    assert manifest["version"] == 1 and manifest["format"] == "ensemble"
    assert [s["name"] for s in manifest["signature"]["inputs"]] == ["pixels_raw"]
    assert [s["name"] for s in manifest["signature"]["outputs"]] == ["digit", "confidence"]


def test_promote_and_rollback_move_the_pipeline_across_two_channel_replicas_under_load(pipeline_repo, tmp_path):
    """The normal channels: promote and rollback on 2 replicas of `production`, 8 clients, no failure, no mix;
    the history is the model's, and a replica started afterwards serves the channel's pipeline version."""
    from controlplane.release.lifecycle import Lifecycle
    from controlplane.triton.load import Switch, judge_switches
    from controlplane.triton.targets import Targets

    repo, modules, work = pipeline_repo
    servers = LocalServers(tmp_path / "home")

    def start(name: str, models):
        return servers.start(ServerOptions(repository=repo.uri, name=name, models=models, http_port=free_port(),
                                           grpc_port=free_port(), metrics_port=free_port(), timeout_s=120,
                                           exit_timeout_s=5, channel="production"))

    states = [start(f"prod{i}", ()) for i in (1, 2)]
    lc = Lifecycle(repo, Targets({"production": tuple(f"127.0.0.1:{s.grpc_port}" for s in states)}, "test"))
    classify = _stamp(modules)
    try:
        first = lc.promote("pipe", 1, "production", reason="first")
        assert first.outcome == "succeeded" and first.from_version is None and len(first.replicas) == 2

        def make_caller(i: int):
            state = states[i % 2]
            protocol, port = ("grpc", state.grpc_port) if i % 4 < 2 else ("http", state.http_port)
            client = TritonClient(f"127.0.0.1:{port}", protocol)
            return lambda: classify(client.infer("pipe", {"raw": RAW}).outputs)

        from controlplane.observe.metrics import direct

        scrape = lambda: [m for s in states for m in direct.scrape(f"http://127.0.0.1:{s.metrics_port}/metrics")]
        before, t0 = scrape(), time.monotonic()
        stop, out, switches = threading.Event(), [], []
        load = threading.Thread(target=lambda: out.append(run_threads(make_caller, 8, 120, stop)))
        load.start()
        try:
            for act, target in (("promote", 2), ("rollback", 1)):
                started = time.monotonic()
                report = lc.promote("pipe", 2, "production") if act == "promote" else lc.rollback("pipe", "production")
                assert report.outcome == "succeeded" and report.to_version == target
                switches.append(Switch(str(target) * 3, started, time.monotonic()))
        finally:
            stop.set()
            load.join(timeout=60)
        verdict = judge_switches(list(out[0].records), switches, {"111", "222"})
        assert verdict["failures"] == 0, verdict["failure_examples"]
        assert verdict["unexpected_versions"] == 0  # never a new pre-processor with an old model, or any other mix
        assert verdict["old_version_after_switch"] == 0 and verdict["requests"] > 50
        assert "222" in {r.version for r in out[0].records}
        # the ensemble is a Triton model: `mlctl metrics pipe` reads its per-version figures like a model's
        figures = direct.figures(before, scrape(), time.monotonic() - t0, "pipe", "1")
        assert figures["success"] > 0 and figures["failures"] == 0 and figures["avg_request_ms"] is not None
        history = lc.history("pipe")
        assert [(e.action, e.from_version, e.to_version, e.outcome) for e in history] == [
            ("promote", None, 1, "succeeded"), ("promote", 1, 2, "succeeded"), ("rollback", 2, 1, "succeeded")]
        status = lc.status("pipe")
        assert status["problems"] == [] and all(r["in_sync"] for r in status["channels"]["production"]["replicas"])
        assert lc.reconcile(["pipe"]) == {"changes": [], "errors": []}
        configs = {k: repo.store.read_bytes(k) for k in ("pipe/configs/production.pbtxt", "pipe.pre/configs/production.pbtxt")}
        # version 3's pre-processor passes publish's checks but raises inside Triton: the promote fails on the first
        # replica, both go back to version 1, and the channel, its configs and the history say so
        (tmp_path / "pre3.py").write_text("import sys\nif 'triton_python_backend_utils' in sys.modules:\n"
                                          "    raise RuntimeError('no tokenizer here')\n" + PRE.format(k=3))
        publish_pipeline(repo, "pipe", "lin", 1, tmp_path / "pre3.py", work / "post1.py")
        with pytest.raises(ServerError, match="reverted 2 replica"):
            lc.promote("pipe", 3, "production")
        assert {k: repo.store.read_bytes(k) for k in configs} == configs
        assert lc.history("pipe")[-1].outcome == "failed" and lc.channels.load("pipe")[0].channels == {"production": 1}
        assert all(r["in_sync"] for r in lc.status("pipe")["channels"]["production"]["replicas"])
        restarted = start("prod3", None)  # loads what production holds, from configs/production.pbtxt
        fresh = Replica(f"127.0.0.1:{restarted.grpc_port}")
        try:
            assert {m: fresh.served(m) for m in ("pipe", "pipe.pre", "pipe.model", "pipe.post")} == {
                "pipe": {1}, "pipe.pre": {1}, "pipe.model": {1}, "pipe.post": {1}}
        finally:
            fresh.close()
        print(f"\npipeline promote+rollback on 2 replicas, 8 clients: {verdict}")
    finally:
        servers.stop_many(("prod1", "prod2", "prod3"), grace_s=15)


def test_cli_promotes_a_pipeline_on_a_channel_and_refuses_a_tampered_version(pipeline_repo, tmp_path):
    """No replicas configured: the channel's configs and history are written; a tampered component changes nothing."""
    import shutil

    from support import run_mlctl

    repo, _modules, _work = pipeline_repo
    root = tmp_path / "repo"
    shutil.copytree(repo.store.root, root)
    promoted = run_mlctl("-r", str(root), "promote", "pipe", "2", "--to", "staging", "--create-channel", "--json")
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["to_version"] == 2
    for key in ("pipe", "pipe.pre", "pipe.model", "pipe.post"):
        assert (root / key / "configs" / "staging.pbtxt").is_file()
    assert (root / "pipe" / "configs" / "staging.pbtxt").read_bytes() == (root / "pipe" / "2" / "ensemble.pbtxt").read_bytes()
    before = (root / ".mlctl" / "channels" / "pipe.json").read_bytes()
    (root / "pipe.post" / "1" / "step.py").write_text("# changed after publish\n")
    tampered = run_mlctl("-r", str(root), "promote", "pipe", "1", "--to", "staging")
    assert tampered.returncode == 6 and "pipe.post/1/step.py: sha256 differs" in tampered.stderr
    assert (root / ".mlctl" / "channels" / "pipe.json").read_bytes() == before
    history = run_mlctl("-r", str(root), "history", "pipe", "--channel", "staging", "--json")
    assert [(e["action"], e["to_version"]) for e in json.loads(history.stdout)["history"]] == [("promote", 2)]


def test_a_channel_that_requires_signatures_holds_a_pipeline_to_them_as_a_unit(pipeline_repo, tmp_path):
    """The pipeline's version folder is what is signed (its manifest pins every component file): unsigned it is refused
    on such a channel, signed it is promoted; a component changed afterwards, even with the pipeline's manifest
    rewritten to match, is refused, at a promote, a replica's start and a re-sign."""
    import shutil

    from support import run_mlctl

    from controlplane.errors import SignatureError
    from controlplane.model.manifest import MANIFEST, sha256_bytes
    from controlplane.security import events
    from controlplane.security.enforce import check_version, sign_version
    from controlplane.security.signing import SIGNATURE, generate_keys
    from controlplane.store.channel_store import ChannelStore

    repo, _modules, work = pipeline_repo
    root = tmp_path / "repo"
    shutil.copytree(repo.store.root, root)
    team = generate_keys(tmp_path / "keys", "team")

    def mlctl(*args: str):
        return run_mlctl("-r", str(root), *args)

    assert mlctl("policy", "trust", "staging", str(team.public_path)).returncode == 0
    assert mlctl("policy", "require", "staging").returncode == 0
    channels = ChannelStore(open_store(str(root)))
    assert "staging" not in channels.load("pipe")[0].channels  # (other tests of this module use other channels)
    unsigned = mlctl("promote", "pipe", "2", "--to", "staging", "--create-channel")
    assert unsigned.returncode == 6, unsigned.stderr
    assert "'pipe' version 2 on channel 'staging'" in unsigned.stderr and "mlctl sign pipe 2" in unsigned.stderr
    assert "staging" not in channels.load("pipe")[0].channels and not (root / "pipe" / "configs" / "staging.pbtxt").exists()

    assert mlctl("sign", "pipe", "2", "--key", str(team.private_path)).returncode == 0
    assert (root / "pipe" / "2" / SIGNATURE).is_file()
    promoted = mlctl("promote", "pipe", "2", "--to", "staging", "--create-channel", "--json")
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["to_version"] == 2

    # the attack a manifest alone misses: a step changed, and the pipeline's manifest recomputed to match it
    copy = Repository(open_store(str(root)))
    step = root / "pipe.post" / "2" / "step.py"
    step.write_text(step.read_text() + "\n# changed after signing\n")
    manifest = copy.manifest("pipe", 2)
    components = manifest.metadata["pipeline"]["components"]
    components["post"]["files"]["step.py"] = {"sha256": sha256_bytes(step.read_bytes()), "size": step.stat().st_size}
    (root / "pipe" / "2" / MANIFEST).write_text(manifest.to_json())
    assert verify_pipeline(copy, "pipe", 2) == []  # sha256 alone sees nothing wrong
    before = events.counts(copy.store)
    with pytest.raises(SignatureError) as refused:  # what a replica of the channel checks before it starts
        check_version(copy, "pipe", 2, "staging", "start a replica serving")
    assert refused.value.exit_code == 6 and refused.value.reason == "files_changed"
    assert events.counts(copy.store)[("tampering_detected", "files_changed")] == before.get(("tampering_detected", "files_changed"), 0) + 1

    # a component changed with the manifest left alone: the signature holds, the pinned hash does not
    assert mlctl("sign", "pipe", "1", "--key", str(team.private_path)).returncode == 0
    (root / "pipe.pre" / "1" / "step.py").write_text("# replaced\n")
    with pytest.raises(SignatureError) as refused:
        check_version(copy, "pipe", 1, "staging", "start a replica serving")
    assert refused.value.reason == "files_changed" and "pipe.pre/1/step.py" in str(refused.value)
    from controlplane.errors import CheckFailedError
    with pytest.raises(CheckFailedError):  # re-signing does not launder it
        sign_version(copy, "pipe", 1, team.private_path)
    back = mlctl("rollback", "pipe", "--channel", "staging", "--to", "1")  # (the integrity check sees it first)
    assert back.returncode == 6 and "pipe.pre/1/step.py" in back.stderr
    assert channels.load("pipe")[0].channels["staging"] == 2

    # signed at publish, before anything is written: a key that cannot sign leaves no component behind
    folders = {key: sorted(p.name for p in (root / key).iterdir()) for key in ("pipe", "pipe.pre", "pipe.model", "pipe.post")}
    bad = mlctl("pipeline", "publish", "pipe", "--model", "lin", "--model-version", "2", "--pre", str(work / "pre2.py"),
                "--post", str(work / "post2.py"), "--sign-key", str(team.public_path))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr, bad.stderr
    assert folders == {key: sorted(p.name for p in (root / key).iterdir()) for key in folders}
    published = mlctl("pipeline", "publish", "pipe", "--model", "lin", "--model-version", "2", "--pre", str(work / "pre2.py"),
                      "--post", str(work / "post2.py"), "--sign-key", str(team.private_path), "--json")
    assert published.returncode == 0, published.stderr
    version = json.loads(published.stdout)["version"]
    assert json.loads(published.stdout)["signed"] is True and (root / "pipe" / str(version) / SIGNATURE).is_file()
    assert check_version(copy, "pipe", version, "staging", "promote").ok


def test_a_replica_start_checks_every_pipeline_version_its_components_allow(pipeline_repo, tmp_path):
    """During a pipeline's canary its components allow the canary's version beside the stable one on the channel, so
    a replica starting then loads both (a step's code runs at load): both pipeline versions pass the channel's
    policy first, and a step of the canary's version changed after signing stops the start before any server."""
    import shutil

    from support import run_mlctl

    from controlplane.errors import SignatureError
    from controlplane.release.lifecycle import Lifecycle
    from controlplane.release.pipeline_channels import allow_versions
    from controlplane.security.enforce import check_replica
    from controlplane.security.signing import generate_keys
    from controlplane.triton.targets import Targets

    repo, _modules, _work = pipeline_repo
    root = tmp_path / "repo"
    shutil.copytree(repo.store.root, root)
    team = generate_keys(tmp_path / "keys", "team")
    for args in (("policy", "trust", "canaries", str(team.public_path)), ("policy", "require", "canaries"),
                 ("sign", "pipe", "1", "--key", str(team.private_path)), ("sign", "pipe", "2", "--key", str(team.private_path)),
                 ("promote", "pipe", "1", "--to", "canaries", "--create-channel")):
        done = run_mlctl("-r", str(root), *args)
        assert done.returncode == 0, done.stderr
    copy = Repository(open_store(str(root)))
    allow_versions(Lifecycle(copy, Targets({})), "pipe", "canaries", (1, 2))  # what a canary of version 2 writes
    models = [m for m in copy.model_names() if copy.has_channel_config(m, "canaries")]  # what a replica loads
    assert {"pipe", "pipe.pre", "pipe.model", "pipe.post"} <= set(models)
    check_replica(copy, models, "canaries")  # both versions signed and whole: the start may go on

    (root / "pipe.post" / "2" / "step.py").write_text("# replaced after signing\n")  # the canary's step, not the channel's
    assert ChannelStore(copy.store).load("pipe")[0].channels["canaries"] == 1
    servers = LocalServers(tmp_path / "home")
    options = ServerOptions(repository=str(root), name="canaries", channel="canaries", http_port=free_port(),
                            grpc_port=free_port(), metrics_port=free_port(), exit_timeout_s=3)
    with pytest.raises(SignatureError) as refused:
        servers.start(options)
    assert refused.value.exit_code == 6 and refused.value.reason == "files_changed"
    assert "'pipe' version 2" in str(refused.value) and "pipe.post/2/step.py" in str(refused.value)
    assert servers.running("canaries") is None  # refused before any server was started


@pytest.fixture(scope="module")
def qa(pipeline_repo, tmp_path_factory):
    """One replica of channel `qa` serving pipeline v1, and a gateway in front of it reading the canary state."""
    import signal

    from support import start_gateway

    from controlplane.release.lifecycle import Lifecycle
    from controlplane.triton.targets import Targets

    repo, _modules, _work = pipeline_repo
    root = tmp_path_factory.mktemp("qa")
    servers = LocalServers(root / "home")
    state = servers.start(ServerOptions(repository=repo.uri, name="qa1", models=(), http_port=free_port(), grpc_port=free_port(),
                                        metrics_port=free_port(), timeout_s=120, exit_timeout_s=5, channel="qa"))
    lc = Lifecycle(repo, Targets({"qa": (state.grpc_url,)}, "test"))
    gateway = None
    try:
        lc.promote("pipe", 1, "qa", reason="stable")
        gateway, url = start_gateway(state, root / "log", "--flush-rows", "20", "--flush-seconds", "0.3",
                                     env={"MLCTL_REPOSITORY": repo.uri})
        yield {"lc": lc, "state": state, "url": url, "log": root / "log"}
    finally:
        if gateway is not None:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=30)
        servers.stop("qa1", grace_s=10)


def test_gate_judges_a_pipeline_end_to_end_from_its_raw_inputs(pipeline_repo, qa, tmp_path):
    """Raw inputs in, the post step's answer out: from the reference's labels, or a --holdout of raw inputs."""
    from controlplane.release.gate import GateThresholds, evaluate, predicted_labels

    repo, modules, _work = pipeline_repo
    thresholds = GateThresholds(min_accuracy=0.99, p99_ms=10_000.0, load_seconds=0.3, concurrency=2)
    verdict = evaluate(repo, "pipe", 1, "qa", qa["state"].grpc_url, thresholds)  # the reference published with v1
    gates = {g.gate: g for g in verdict.gates}
    assert verdict.passed, verdict.to_dict()
    assert gates["accuracy"].value == 1.0 and gates["error_rate"].value == 0.0 and "60 held-out" in gates["accuracy"].detail
    raw = np.random.default_rng(0).integers(0, 256, (40, 8)).astype(np.uint8)
    np.savez(tmp_path / "wrong.npz", features=raw, labels=(_answers(modules[1], raw, pre=1) + 1) % 4)
    wrong = evaluate(repo, "pipe", 1, "qa", qa["state"].grpc_url, thresholds, tmp_path / "wrong.npz")
    assert not wrong.passed and {g.gate for g in wrong.gates if not g.passed} == {"accuracy"}
    with pytest.raises(UsageError, match="pass --holdout, or publish 'pipe' v2 with a labelled --reference"):
        evaluate(repo, "pipe", 2, "qa", qa["state"].grpc_url, thresholds)
    # a post step answering the label itself (one integer per row) is compared as it is; scores by their arg-max
    assert predicted_labels(np.array([[7], [2]], np.int64)).tolist() == [7, 2]
    assert predicted_labels(np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)).tolist() == [1, 0]


def test_canary_sends_a_weight_of_the_pipelines_traffic_to_the_candidate_pipeline(pipeline_repo, qa):
    """The companion `pipe.canary` pins the candidate's components, loaded beside the stable's: through the gateway
    at 50 % both pipelines answer, never a mix; abort unloads it and the components go back to the stable version."""
    from support import ADMIN_KEY, call

    from controlplane.release.canary import Canaries, CanaryPolicy

    repo, modules, _work = pipeline_repo
    classify = _stamp(modules)
    canaries = Canaries(qa["lc"])
    replica = Replica(qa["state"].grpc_url)
    try:
        state = canaries.start("pipe", 2, "qa", (50.0,), 0.0, CanaryPolicy())
        assert state.stable == 1 and replica.served("pipe.canary") == {2} and replica.served("pipe.pre") == {1, 2}
        time.sleep(1.5)  # the gateway re-reads the canary state every CANARY_STATE_TTL_S
        seen = {}
        for _ in range(40):
            status, body = call(qa["url"], "/v1/models/pipe/predict", {"inputs": {"raw": RAW.tolist()}}, key=ADMIN_KEY)
            assert status == 200, body
            outputs = {k: np.array([v]) for k, v in body["predictions"][0]["outputs"].items()}
            stamp = classify(outputs)
            seen[(body["version"], stamp)] = seen.get((body["version"], stamp), 0) + 1
        assert set(seen) == {("1", "111"), ("2", "222")}, seen  # each arm answers with its own pipeline, whole
        assert abs(seen[("2", "222")] - 20) <= 1
        ended = canaries.abort("pipe", "test over")
        assert ended.status == "aborted" and not (repo.store.root / "pipe.canary").exists()
        assert {m: replica.served(m) for m in ("pipe", "pipe.pre", "pipe.model", "pipe.post", "pipe.canary")} == {
            "pipe": {1}, "pipe.pre": {1}, "pipe.model": {1}, "pipe.post": {1}, "pipe.canary": set()}
        assert qa["lc"].status("pipe")["channels"]["qa"]["replicas"][0]["in_sync"]
    finally:
        replica.close()


def test_metrics_and_monitor_read_a_pipeline_like_a_model(pipeline_repo, qa):
    """`mlctl metrics show pipe` from the ensemble's per-version figures; `mlctl monitor report pipe` from the
    gateway's prediction log of the pipeline, against the reference of raw inputs published with v1."""
    from support import ADMIN_KEY, call, run_mlctl

    repo, _modules, _work = pipeline_repo
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            call(qa["url"], "/v1/models/pipe/predict", {"inputs": {"raw": RAW.tolist()}}, key=ADMIN_KEY)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        shown = run_mlctl("-r", repo.uri, "metrics", "show", "pipe", "--source", "direct", "--metrics-url",
                          f"http://127.0.0.1:{qa['state'].metrics_port}/metrics", "--window", "1s", "--json")
    finally:
        stop.set()
        sender.join(timeout=30)
    assert shown.returncode == 0, shown.stderr
    versions = {v["version"]: v["figures"] for v in json.loads(shown.stdout)["versions"]}
    assert versions["1"]["success"] > 0 and versions["1"]["failures"] == 0 and versions["1"]["avg_request_ms"] > 0
    time.sleep(1.0)  # the gateway flushes its log every 0.3 s
    report = run_mlctl("-r", repo.uri, "monitor", "report", "pipe", "--log", str(qa["log"]), "--window", "1h", "--json")
    assert report.returncode == 0, report.stderr
    v1 = json.loads(report.stdout)["versions"]["1"]
    assert v1["predictions"] >= versions["1"]["success"] and v1["reference_accuracy"] == 1.0
    # the logged raw inputs against the reference's: 8 features compared (RAW alone is far from the reference)
    assert v1["data_drift"].get("not_made") is None and len(v1["data_drift"]["features"]) == 8, v1["data_drift"]



LABEL_POST = '''import numpy as np
INPUTS = ["y:float32:4"]
OUTPUTS = ["label:int64:1", "confidence:float32:1"]
def process(inputs):
    y = inputs["y"]
    return {"label": y.argmax(axis=1).reshape(-1, 1).astype(np.int64), "confidence": y.max(axis=1, keepdims=True)}
'''


def test_a_pipeline_answering_a_label_is_judged_on_feedback_labels_and_its_canary_promotes(pipeline_repo, qa):
    """A post step answering the class itself (one integer per row): the gateway logs it as the predicted class, so
    feedback labels give the monitor's accuracy and the canary's, and a canary of the pipeline promotes on them."""
    from support import ADMIN_KEY, call, run_mlctl, wait_until

    from controlplane.release.canary import Canaries, CanaryPolicy

    repo, modules, work = pipeline_repo
    (work / "post_label.py").write_text(LABEL_POST)
    for k in (1, 2):
        publish_pipeline(repo, "plabel", "lin", k, work / "pre1.py", work / "post_label.py", {"note": f"label v{k}"})
    qa["lc"].promote("plabel", 1, "qa", reason="stable")
    raw = np.random.default_rng(3).integers(0, 256, (8, 8)).astype(np.uint8)
    expected = {"1": _answers(modules[1], raw, pre=1).tolist(), "2": _answers(modules[2], raw, pre=1).tolist()}

    def send(requests: int, wrong_every: int = 0) -> dict[str, int]:
        """Requests of 8 rows, each row labelled with its answered class (every `wrong_every`-th with another)."""
        versions: dict[str, int] = {}
        for _ in range(requests):
            status, body = call(qa["url"], "/v1/models/plabel/predict", {"inputs": {"raw": raw.tolist()}}, key=ADMIN_KEY)
            assert status == 200, body
            classes = [p["predicted_class"] for p in body["predictions"]]
            assert classes == expected[body["version"]] and "probabilities" not in body["predictions"][0]
            versions[body["version"]] = versions.get(body["version"], 0) + 1
            feedback = [{"prediction_id": p["prediction_id"], "label": c + (9 if wrong_every and i % wrong_every == 0 else 0)}
                        for i, (p, c) in enumerate(zip(body["predictions"], classes))]
            status, body = call(qa["url"], "/v1/feedback", {"feedback": feedback}, key=ADMIN_KEY)
            assert status == 202, body
        return versions

    send(5, wrong_every=4)  # 40 rows, 10 of them labelled with another class (labels are not held to a range)
    time.sleep(0.6)  # the gateway flushes its log every 0.3 s
    report = run_mlctl("-r", repo.uri, "monitor", "report", "plabel", "--log", str(qa["log"]), "--window", "1h", "--json")
    assert report.returncode == 0, report.stderr
    v1 = json.loads(report.stdout)["versions"]["1"]
    assert (v1["labelled"], v1["quality"]["accuracy"]) == (40, 0.75), v1["quality"]

    canaries = Canaries(qa["lc"], open_store(str(qa["log"])))
    canaries.start("plabel", 2, "qa", (50.0,), 0.0, CanaryPolicy(min_requests=16, min_labels=16, p99_slack_ms=1000))  # judged on labels, not latency
    wait_until(lambda: "2" in send(1), 10, "the gateway routing to the canary")  # it re-reads the canary state every second
    answered = {"1": 0, "2": 0}
    deadline = time.monotonic() + 30
    while min(answered.values()) < 3 and time.monotonic() < deadline:  # 24 labelled rows on each arm
        for version, count in send(2).items():
            answered[version] += count
    time.sleep(0.6)  # flushed
    state = canaries.step("plabel")
    accuracy = state.decisions[-1]["evidence"]["checks"]["accuracy"]
    assert state.status == "promoted", state.decisions[-1]
    assert (accuracy["status"], accuracy["accuracy_canary"]) == ("passed", 1.0) and accuracy["labelled_canary"] >= 16
    assert qa["lc"].status("plabel")["channels"]["qa"]["version"] == 2
