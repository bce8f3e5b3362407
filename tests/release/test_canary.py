"""Canaries through the real gateway and a real Triton replica of the production channel."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from support import ADMIN_KEY, call, free_port, run_mlctl, start_gateway, wait_until

from controlplane.feedback.predlog import read_tables
from controlplane.model.bundle import ExportBundle
from controlplane.model.config import ServingOptions
from controlplane.quality.reference import ReferenceSample
from controlplane.release.canary import CanaryPolicy, CanaryState, CanaryStore
from controlplane.release.canary.judge import arms_from_log
from controlplane.release.lifecycle import Lifecycle
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.server.local import LocalServers, ServerOptions
from controlplane.triton.targets import Targets

pytestmark = pytest.mark.e2e
ROW = {"inputs": {"x": [[0.1] * 8]}}
# canaries judged on anything but latency: a p99 bound this loose cannot abort them on a busy host (the slow
# canary's test keeps the default bound)
LOOSE_P99 = ("--p99-slack-ms", "1000")


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
    # a clearly worse model with the same signature: the good one's scores negated, so its class is never stable's
    class Negated(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return -self.inner(x)

    weak = root / "weak-export"
    weak.mkdir()
    shutil.copy(exports["mlp"].path / "export.json", weak / "export.json")
    shutil.copy(exports["mlp"].path / "model.onnx", weak / "model.onnx")
    torch.jit.trace(Negated(torch.jit.load(str(exports["mlp"].path / "model.pt"))), torch.zeros(1, 8)).save(str(weak / "model.pt"))
    servers = LocalServers(root / "home")
    replica = servers.start(ServerOptions(repository=str(root / "repo"), name="prod", channel="production", http_port=free_port(),
                                          grpc_port=free_port(), metrics_port=free_port()))
    gateway, url = start_gateway(replica, root / "log", "--flush-rows", "200", "--flush-seconds", "0.3",
                                 env={"MLCTL_REPOSITORY": str(root / "repo")})
    env = {"MLCTL_REPOSITORY": str(root / "repo"), "MLCTL_TARGETS_PRODUCTION": replica.grpc_url, "MLCTL_PREDICTION_LOG": str(root / "log")}
    try:
        yield {"root": root, "repo": Repository(open_store(str(root / "repo"))), "replica": replica, "url": url, "env": env,
               "bad": ExportBundle.load(bad), "slow": ExportBundle.load(slow), "weak": ExportBundle.load(weak), "good": exports["mlp"]}
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(timeout=30)
        servers.stop("prod", grace_s=10)


def prepare(stage, name: str, bundles: tuple[str, ...] = ("good", "good", "bad", "slow")) -> None:
    """By default TorchScript v1 and v2 good, v3 failing on real inputs, v4 slow; production at v1."""
    repo = stage["repo"]
    # a version that fails on real inputs would already be refused at load by a random warm-up sample; these
    # tests are about failures that only live traffic shows, so the model is published without one
    serving = ServingOptions(warmup="bad" not in bundles)
    for bundle in bundles:
        repo.publish(stage[bundle], name, "torchscript", serving)
    Lifecycle(repo, Targets({"production": (stage["replica"].grpc_url,)})).promote(name, 1, "production")


def logged(stage, model: str, stable: int, canary: int) -> dict[str, dict]:
    """Per-arm figures in the gateway's prediction log so far (the judge's own reading of it)."""
    return arms_from_log(*read_tables(open_store(str(stage["root"] / "log")), model), model, stable, canary,
                         datetime(2000, 1, 1, tzinfo=UTC))


def history(env: dict, model: str) -> list[dict]:
    return json.loads(run_mlctl("history", model, "--json", env=env).stdout)["history"]


class Traffic:
    """Requests through the gateway until stopped; counts answers per version and failures."""

    def __init__(self, url: str, model: str, threads: int = 4, label: bool = False) -> None:
        self.url, self.model, self.label = url, model, label  # label: feedback = the class answered (always right)
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
            if status == 200 and self.label:
                answer = body["predictions"][0]
                call(self.url, "/v1/feedback", {"prediction_id": answer["prediction_id"], "label": answer["predicted_class"]},
                     key=ADMIN_KEY)

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
    ratio = run_mlctl("canary", "start", "cbad", "2", "--weight", "10", "--p99-ratio", "0.5", env=env)
    assert ratio.returncode == 2 and "--p99-ratio of at least 1" in ratio.stderr
    unknown = run_mlctl("canary", "start", "cbad", "9", "--weight", "10", env=env)
    assert unknown.returncode == 3 and "version 9" in unknown.stderr
    assert run_mlctl("canary", "start", "cbad", "2", "--weight", "10", env=env).returncode == 0
    second = run_mlctl("canary", "start", "cbad", "2", "--weight", "10", env=env)
    assert second.returncode == 4 and "already has a running canary" in second.stderr
    by_hand = run_mlctl("canary", "run", "cbad", "--max-seconds", "5", env=env)  # started without --interval
    assert by_hand.returncode == 2 and by_hand.stdout == ""
    assert "started without --interval" in by_hand.stderr and "mlctl canary step cbad" in by_hand.stderr
    state = json.loads(run_mlctl("canary", "status", "cbad", "--json", env=env).stdout)
    assert (state["status"], state["interval_s"], state["weight"]) == ("running", 0.0, 10.0)  # unchanged
    assert run_mlctl("canary", "abort", "cbad", env=env).returncode == 0
    assert json.loads(run_mlctl("canary", "status", "cbad", "--json", env=env).stdout)["status"] == "aborted"


def test_a_canary_companion_is_shown_under_its_model_not_as_a_model(stage):
    prepare(stage, "clist", ("good", "good"))
    env = stage["env"]
    assert run_mlctl("canary", "start", "clist", "2", "--weight", "10", env=env).returncode == 0
    listed = run_mlctl("model", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    models = {m["name"]: m for m in json.loads(listed.stdout)["models"]}
    assert "clist.canary" not in models and models["clist"]["canary"] == 2 and models["clist"]["versions"] == [1, 2]
    text = run_mlctl("model", "list", env=env)
    assert text.returncode == 0 and "clist.canary" not in text.stdout and text.stdout.splitlines()[0].split()[-1] == "canary"
    versions = run_mlctl("model", "versions", "clist.canary", "--json", env=env)
    assert versions.returncode == 2 and versions.stdout == ""
    assert "'clist.canary' is not a model: it is the canary companion of 'clist'" in versions.stderr
    assert "mlctl canary status clist" in versions.stderr
    assert run_mlctl("canary", "abort", "clist", env=env).returncode == 0
    after = {m["name"]: m for m in json.loads(run_mlctl("model", "list", "--json", env=env).stdout)["models"]}
    assert after["clist"]["canary"] is None


def test_split_follows_the_weight_and_direct_requests_stay_on_stable(stage):
    prepare(stage, "csplit")
    env = stage["env"]
    assert run_mlctl("canary", "start", "csplit", "2", "--weight", "30", env=env).returncode == 0
    wait_until(lambda: call(stage["url"], "/v1/models/csplit/predict", ROW, key=ADMIN_KEY)[1].get("version") == "2", 10,
               "the gateway routing to the canary")  # it re-reads the canary state every second
    counts: dict[str, int] = {}
    for _ in range(1000):  # the split counts requests, so 1,000 in a row hold 300 +/- 1 canary answers
        status, body = call(stage["url"], "/v1/models/csplit/predict", ROW, key=ADMIN_KEY)
        assert status == 200
        counts[body["version"]] = counts.get(body["version"], 0) + 1
    share = counts.get("2", 0) / 1000
    print(f"\nsplit at weight 30: {counts} -> canary share {share:.4f}")
    assert abs(share - 0.30) <= 0.02, counts
    with TritonClient(stage["replica"].grpc_url) as client:  # unversioned, straight to Triton: stable
        assert {client.infer("csplit", {"x": np.zeros((1, 8), np.float32)}).version for _ in range(20)} == {"1"}
    assert run_mlctl("canary", "abort", "csplit", env=env).returncode == 0


def test_a_failing_canary_is_aborted_automatically(stage):
    prepare(stage, "cfail")
    env = stage["env"]
    with Traffic(stage["url"], "cfail") as traffic:
        result = run_mlctl("canary", "start", *LOOSE_P99, "cfail", "3", "--steps", "20,50,100", "--interval", "2s", "--min-requests", "20",
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
    with Traffic(stage["url"], "cgood", label=True):
        result = run_mlctl("canary", "start", *LOOSE_P99, "cgood", "2", "--steps", "50,100", "--interval", "2s", "--min-requests", "20",
                           "--min-labels", "20", "--max-seconds", "60", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    state = json.loads(run_mlctl("canary", "status", "cgood", "--json", env=env).stdout)
    assert state["status"] == "promoted" and state["decisions"][-1]["evidence"]["checks"]["accuracy"]["status"] == "passed"
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
    prepare(stage, "cshadow", ("good", "good"))
    env = stage["env"]
    started = run_mlctl("canary", "start", *LOOSE_P99, "cshadow", "2", "--shadow", "--weight", "100", "--min-requests", "20",
                        "--allow-unlabelled", env=env)
    assert started.returncode == 0, started.stderr
    with Traffic(stage["url"], "cshadow") as traffic:  # until the mirrored requests are in the log
        wait_until(lambda: logged(stage, "cshadow", 1, 2)["canary"]["requests"] >= 20, 60, "20 shadow records in the log")
    assert traffic.failures == 0 and set(traffic.versions) == {"1"}  # every answer came from stable
    judged = run_mlctl("canary", "step", "cshadow", "--json", env=env)
    assert judged.returncode == 0, judged.stdout + judged.stderr
    state = json.loads(judged.stdout)
    assert state["status"] == "promoted" and state["allow_unlabelled"] is True  # the user's opt-out, in the state
    evidence = state["decisions"][-1]["evidence"]
    assert evidence["canary"]["requests"] >= 20 and evidence["canary"]["errors"] == 0  # the mirrored requests
    assert evidence["checks"]["accuracy"]["status"] == "not made"  # reported as not made, never as passed
    start = [h for h in history(env, "cshadow") if h["action"] == "canary-start"][-1]
    assert "--allow-unlabelled" in start["detail"]  # and in the history


def test_a_worse_shadow_canary_without_labels_is_not_promoted(stage):
    """The reported incident: a weak version in shadow mode, no labels. It must hold, and `run` must fail."""
    prepare(stage, "cweak", ("good", "weak"))
    env = stage["env"]
    with Traffic(stage["url"], "cweak"):
        result = run_mlctl("canary", "start", "cweak", "2", "--shadow", "--weight", "30", "--interval", "1s",
                           "--min-requests", "20", "--max-seconds", "12", *LOOSE_P99, env=env)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "passed its last step but was not promoted: accuracy not made: 0 of 50 labels on the canary" in result.stderr
    assert "--allow-unlabelled" in result.stderr and result.stdout == ""
    state = json.loads(run_mlctl("canary", "status", "cweak", "--json", env=env).stdout)
    assert (state["status"], state["weight"], state["step_index"]) == ("running", 30.0, 0)  # holds at its last step
    hold = state["decisions"][-1]
    assert hold["action"] == "canary-hold" and hold["detail"].startswith("not promoted automatically: accuracy not made: 0 of 50")
    assert [h["action"] for h in history(env, "cweak")].count("canary-hold") == 1  # recorded once, when the hold began
    assert "canary-promote" not in [h["action"] for h in history(env, "cweak")]
    assert json.loads(run_mlctl("status", "cweak", "--json", env=env).stdout)["channels"]["production"]["version"] == 1
    assert run_mlctl("canary", "abort", "cweak", env=env).returncode == 0


def test_a_worse_shadow_canary_with_labels_is_aborted_on_accuracy(stage):
    prepare(stage, "clabel", ("good", "weak"))
    env = stage["env"]
    started = run_mlctl("canary", "start", *LOOSE_P99, "clabel", "2", "--shadow", "--weight", "100", "--min-requests", "20",
                        "--min-labels", "20", env=env)
    assert started.returncode == 0, started.stderr
    with Traffic(stage["url"], "clabel", label=True) as traffic:  # labels: the class stable answered, always right
        wait_until(lambda: logged(stage, "clabel", 1, 2)["canary"]["labelled"] >= 20, 60, "20 labelled shadow records")
    assert traffic.failures == 0 and set(traffic.versions) == {"1"}
    judged = run_mlctl("canary", "step", "clabel", "--json", env=env)
    assert judged.returncode == 6, judged.stdout + judged.stderr
    # on a loaded machine a p99 breach may be named beside the accuracy one; the accuracy breach must be there
    assert "aborted" in judged.stderr and "accuracy 0.0% is 100.0% below stable's 100.0%" in judged.stderr
    state = json.loads(judged.stdout)
    assert state["status"] == "aborted" and state["decisions"][-1]["evidence"]["checks"]["accuracy"]["status"] == "breached"
    assert "accuracy" in [h for h in history(env, "clabel") if h["action"] == "canary-abort"][-1]["detail"]
    assert json.loads(run_mlctl("status", "clabel", "--json", env=env).stdout)["channels"]["production"]["version"] == 1


def tree(path: Path) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_the_canary_suffix_is_reserved_and_a_published_model_of_that_name_is_never_touched(stage, tmp_path):
    prepare(stage, "cpub", ("good", "good"))
    env, root = stage["env"], stage["root"] / "repo"
    refused = run_mlctl("publish", str(stage["good"].path), "--name", "cpub.canary", "--format", "torchscript", env=env)
    assert refused.returncode == 2 and "reserved for canaries" in refused.stderr and not (root / "cpub.canary").exists()
    # a model published under that name before the suffix was reserved: immutable versions with manifests
    shutil.copytree(root / "cpub", root / "cpub.canary", ignore=shutil.ignore_patterns("configs"))
    (root / "cpub.canary" / "config.pbtxt").write_text((root / "cpub" / "config.pbtxt").read_text().replace('"cpub"', '"cpub.canary"'))
    before = tree(root / "cpub.canary")
    start = run_mlctl("canary", "start", "cpub", "2", "--weight", "10", env=env)
    assert start.returncode == 4, start.stdout + start.stderr
    assert "is a published model, not a canary companion" in start.stderr and "nothing was changed" in start.stderr
    assert tree(root / "cpub.canary") == before and stage["repo"].verify("cpub.canary", 1) == []
    assert not (root / ".mlctl" / "canary" / "cpub.json").exists()
    assert "canary-start" not in [h["action"] for h in history(env, "cpub")]
    listed = {m["name"] for m in json.loads(run_mlctl("model", "list", "--json", env=env).stdout)["models"]}
    assert "cpub.canary" in listed  # a published model stays a model
    # a running canary state for it (e.g. written by an older mlctl): abort stops routing, deletes nothing unmarked
    state = CanaryState.begin("cpub", "production", 1, 2, (10.0,), 0.0, CanaryPolicy())
    CanaryStore(stage["repo"].store).save(state, None)
    aborted = run_mlctl("canary", "abort", "cpub", env=env)
    assert aborted.returncode == 0, aborted.stderr
    assert "carries no canary mark" in aborted.stderr and tree(root / "cpub.canary") == before


def probability_versions(stage, name: str, signs: tuple[float, float]) -> None:
    """v1 and v2 answer softmax(sign x 10 x the good model's scores) (sign -1: confidently wrong), each published
    with its own reference (features, its scores, labels: the class v1 answers, as Traffic labels); production at v1."""
    import torch

    class Softmax(torch.nn.Module):
        def __init__(self, inner, sign: float) -> None:
            super().__init__()
            self.inner, self.sign = inner, sign

        def forward(self, x):
            return torch.softmax(self.sign * 10 * self.inner(x), dim=1)

    good = stage["good"].path
    features = np.random.default_rng(0).normal(size=(400, 8)).astype(np.float32)
    truth = None
    for version, sign in enumerate(signs, start=1):
        folder = stage["root"] / f"{name}-v{version}"
        folder.mkdir()
        shutil.copy(good / "export.json", folder / "export.json")
        shutil.copy(good / "model.onnx", folder / "model.onnx")
        net = Softmax(torch.jit.load(str(good / "model.pt")), sign).eval()
        torch.jit.trace(net, torch.zeros(1, 8)).save(str(folder / "model.pt"))
        with torch.inference_mode():
            scores = net(torch.from_numpy(features)).numpy()
        truth = scores.argmax(1) if truth is None else truth
        np.savez(folder / "reference.npz", features=features, predicted=scores.argmax(1), labels=truth, outputs=scores)
        stage["repo"].publish(ExportBundle.load(folder), name, "torchscript", ServingOptions(), {}, ReferenceSample.read(folder / "reference.npz"))
    Lifecycle(stage["repo"], Targets({"production": (stage["replica"].grpc_url,)})).promote(name, 1, "production")


def shadow_judged(stage, name: str):
    """A shadow canary of v2 at 100 %, opted in to estimates, judged once after 20 mirrored (unlabelled) answers."""
    env = stage["env"]
    started = run_mlctl("canary", "start", *LOOSE_P99, name, "2", "--shadow", "--weight", "100", "--min-requests", "20",
                        "--estimate-missing-labels", env=env)
    assert started.returncode == 0, started.stderr
    with Traffic(stage["url"], name):
        wait_until(lambda: logged(stage, name, 1, 2)["canary"]["requests"] >= 20, 60, "20 shadow records in the log")
    return run_mlctl("canary", "step", name, "--json", env=env)


def test_a_confidently_wrong_canary_without_labels_is_aborted_on_its_estimated_accuracy(stage):
    probability_versions(stage, "cest", (1.0, -1.0))
    judged = shadow_judged(stage, "cest")
    assert judged.returncode == 6, judged.stdout + judged.stderr
    assert "was aborted: automatic: estimated accuracy" in judged.stderr and "ESTIMATED from the logged scores" in judged.stderr
    state = json.loads(judged.stdout)
    check = state["decisions"][-1]["evidence"]["checks"]["accuracy"]
    assert state["status"] == "aborted" and check["status"] == "breached" and check["basis"] == "estimated"
    assert check["estimated_stable"] > 0.9 and check["estimated_canary"] < 0.5 and check["labelled_canary"] == 0
    assert check["estimates"]["canary"]["calibrated_on"] == "its own reference"
    assert state["policy"]["estimate_missing_labels"] is True  # the opt-in, in the state
    start = [h for h in history(stage["env"], "cest") if h["action"] == "canary-start"][-1]
    assert "--estimate-missing-labels" in start["detail"]  # and in the history
    assert json.loads(run_mlctl("status", "cest", "--json", env=stage["env"]).stdout)["channels"]["production"]["version"] == 1

