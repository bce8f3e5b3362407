"""Promotion gates against the session's real Triton, which serves the trained digits classifier."""

import json

import pytest
from support import free_port, run_mlctl

pytestmark = pytest.mark.e2e


@pytest.fixture
def thresholds(tmp_path):
    def write(**values) -> str:
        body = "[gate]\n" + "".join(f"{k} = {v}\n" for k, v in {"load_seconds": 1.0, "concurrency": 2, "p99_ms": 2000, **values}.items())
        path = tmp_path / "gates.toml"
        path.write_text(body)
        return str(path)

    return write


def test_a_good_candidate_passes_every_gate(triton, session_repo, thresholds):
    result = run_mlctl("-r", session_repo.uri, "gate", "classifier", "1", "--url", triton.grpc_url, "--thresholds", thresholds(min_accuracy=0.8), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    gates = {g["gate"]: g for g in verdict["gates"]}
    assert verdict["passed"] and set(gates) == {"integrity", "accuracy", "p99_latency", "error_rate"}
    assert gates["accuracy"]["value"] > 0.8  # served answers on the 360-sample reference
    assert gates["error_rate"]["value"] == 0 and gates["p99_latency"]["value"] > 0
    # the long steps say what they do on stderr, not on stdout (which holds one JSON document)
    assert "held-out rows through" in result.stderr and "load at concurrency 2 for 1 s" in result.stderr


def test_failed_gates_exit_6_and_tool_failures_do_not(triton, session_repo, thresholds):
    strict = thresholds(min_accuracy=0.9999, p99_ms=0.001)
    failed = run_mlctl("-r", session_repo.uri, "gate", "classifier", "1", "--url", triton.grpc_url, "--thresholds", strict, "--json")
    assert failed.returncode == 6 and "failed the gate(s): accuracy, p99_latency" in failed.stderr
    gates = {g["gate"]: g["passed"] for g in json.loads(failed.stdout)["gates"]}
    assert gates == {"integrity": True, "accuracy": False, "p99_latency": False, "error_rate": True}
    down = run_mlctl("-r", session_repo.uri, "gate", "classifier", "1", "--url", f"127.0.0.1:{free_port()}", "--thresholds", strict)
    assert down.returncode == 5
    missing = run_mlctl("-r", session_repo.uri, "gate", "classifier", "9", "--url", triton.grpc_url)
    assert missing.returncode == 3
    bad = run_mlctl("-r", session_repo.uri, "gate", "classifier", "1", "--url", triton.grpc_url, "--thresholds", thresholds(p99=3))
    assert bad.returncode == 2 and "unknown gate settings p99" in bad.stderr


def test_promote_with_gate_refuses_a_failing_candidate(triton, session_repo, thresholds):
    result = run_mlctl("-r", session_repo.uri, "promote", "classifier", "1", "--to", "qa", "--create-channel", "--gate",
                       "--gate-url", triton.grpc_url, "--gate-thresholds", thresholds(min_accuracy=0.9999))
    assert result.returncode == 6 and "refused" in result.stderr and "nothing changed" in result.stderr
    assert json.loads(run_mlctl("-r", session_repo.uri, "history", "classifier", "--json").stdout)["history"] == []


@pytest.mark.parametrize("body, message", [
    ('[gate]\np99_ms = "fast"\n', "[gate] p99_ms = 'fast' is not valid; expected a number of milliseconds above 0"),
    ("[gate]\nconcurrency = 2.5\n", "[gate] concurrency = 2.5 is not valid; expected a whole number of at least 1"),
    ("[gate]\nmax_error_rate = true\n", "[gate] max_error_rate = True is not valid"),
    ("[gates]\np99_ms = 1\n", "unknown table(s) gates"),
    ("p99_ms = 1\n", "unknown table(s) p99_ms"),
    ("", "has no [gate] table"),
])
def test_a_bad_thresholds_file_is_refused_before_any_load(session_repo, tmp_path, body, message):
    path = tmp_path / "gates.toml"
    path.write_text(body)
    # nothing listens at --url: an error other than 2 would mean the file passed and the gate went on
    result = run_mlctl("-r", session_repo.uri, "gate", "classifier", "1", "--url", f"127.0.0.1:{free_port()}", "--thresholds", str(path))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and str(path) in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_promote_to_a_mistyped_channel_is_refused_before_the_gate(session_repo, thresholds):
    result = run_mlctl("-r", session_repo.uri, "promote", "classifier", "1", "--to", "prodution", "--gate",
                       "--gate-url", f"127.0.0.1:{free_port()}", "--gate-thresholds", thresholds(),
                       env={"MLCTL_TARGETS_PRODUCTION": "127.0.0.1:1"})
    assert result.returncode == 2 and "did you mean 'production'?" in result.stderr


def test_the_accuracy_floor_says_where_it_comes_from():
    from controlplane.release.gate import GateThresholds, accuracy_floor

    t = GateThresholds(accuracy_tolerance=0.01)
    assert accuracy_floor(3, None, None, None, t) == (None, "no production version yet")
    assert accuracy_floor(3, 2, 2, 0.9, t) == (pytest.approx(0.89), "production v2: 0.9000 - 0.01")
    # the candidate is production's version: the floor is the version before it, or none
    floor, basis = accuracy_floor(3, 3, 2, 0.9, t)
    assert floor == pytest.approx(0.89) and basis.startswith("v3 is production's version; compared with the version before it, v2")
    assert accuracy_floor(3, 3, None, None, t) == (None, "v3 is production's version and none came before it")
    floor, basis = accuracy_floor(3, 2, 2, None, GateThresholds(min_accuracy=0.8))
    assert floor == 0.8 and "no production version yet" not in basis and "v2 has no evaluation.accuracy" in basis


@pytest.fixture(scope="module")
def estimating(tmp_path_factory, exports):
    """A Triton of its own serving two versions of one model: v1 (production) published with a labelled
    reference and its scores, v2 (the candidate) with a reference without labels."""
    import shutil

    import numpy as np
    import torch

    from controlplane.model.bundle import ExportBundle
    from controlplane.model.config import ServingOptions, VersionPolicy
    from controlplane.quality.reference import ReferenceSample
    from controlplane.release.lifecycle import Lifecycle
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.server.local import LocalServers, ServerOptions
    from controlplane.triton.targets import Targets

    root = tmp_path_factory.mktemp("gate-estimate")
    (root / "repo").mkdir()
    repo = Repository(open_store(str(root / "repo")))

    class Probabilities(torch.nn.Module):  # CBPE calibrates scores that behave like probabilities
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return torch.softmax(10 * self.inner(x), dim=1)

    net = Probabilities(torch.jit.load(str(exports["mlp"].path / "model.pt"))).eval()
    bundle = root / "export"
    bundle.mkdir()
    for name in ("export.json", "model.onnx"):
        shutil.copy(exports["mlp"].path / name, bundle / name)
    torch.jit.trace(net, torch.zeros(1, 8)).save(str(bundle / "model.pt"))
    rng = np.random.default_rng(0)

    def scores(x):
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy().astype(float)

    x = rng.normal(size=(400, 8)).astype(np.float32)
    probabilities = scores(x)
    labels = np.array([rng.choice(4, p=p / p.sum()) for p in probabilities])  # the model is calibrated: CBPE's premise
    answered = probabilities.argmax(1)
    np.savez(root / "labelled.npz", features=x, predicted=answered, labels=labels, outputs=probabilities)
    later = rng.normal(size=(300, 8)).astype(np.float32)
    np.savez(root / "unlabelled.npz", features=later, predicted=scores(later).argmax(1))
    serving = ServingOptions(version_policy=VersionPolicy("all"))
    for reference in ("labelled.npz", "unlabelled.npz"):
        repo.publish(ExportBundle.load(bundle), "est", "torchscript", serving, {}, ReferenceSample.read(root / reference))
    Lifecycle(repo, Targets({})).promote("est", 1, "production", create_channel=True)  # no replicas: the channel's record only
    servers = LocalServers(root / "home")
    replica = servers.start(ServerOptions(repository=str(root / "repo"), name="est", http_port=free_port(), grpc_port=free_port(),
                                          metrics_port=free_port()))
    try:
        yield {"repo": str(root / "repo"), "url": replica.grpc_url, "accuracy": float((labels == answered).mean())}
    finally:
        servers.stop("est", grace_s=5)


def test_without_labels_the_gate_refuses_unless_asked_to_estimate(estimating, thresholds):
    refused = run_mlctl("-r", estimating["repo"], "gate", "est", "2", "--url", estimating["url"], "--thresholds", thresholds())
    assert refused.returncode == 2 and "no held-out set" in refused.stderr and "--estimate-missing-labels" in refused.stderr
    result = run_mlctl("-r", estimating["repo"], "gate", "est", "2", "--url", estimating["url"], "--thresholds",
                       thresholds(accuracy_tolerance=0.05), "--estimate-missing-labels", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    gates = {g["gate"]: g for g in json.loads(result.stdout)["gates"]}
    assert set(gates) == {"integrity", "estimated_accuracy", "p99_latency", "error_rate"}  # never "accuracy"
    estimated = gates["estimated_accuracy"]
    assert estimated["basis"] == "estimated" and estimated["band"][0] <= estimated["value"] <= estimated["band"][1]
    assert abs(estimated["value"] - estimating["accuracy"]) < 0.05  # the same model: about production's accuracy
    assert estimated["threshold"] == pytest.approx(estimating["accuracy"] - 0.05)  # production's accuracy - tolerance
    assert estimated["detail"].startswith("ESTIMATED, no labels:") and "calibrated on v1's reference" in estimated["detail"]
    assert "300 reference rows through" in result.stderr
    strict = run_mlctl("-r", estimating["repo"], "gate", "est", "2", "--url", estimating["url"], "--thresholds",
                       thresholds(min_accuracy=0.99), "--estimate-missing-labels")
    assert strict.returncode == 6 and "failed the gate(s): estimated_accuracy" in strict.stderr
    assert "~0." in strict.stdout and "ESTIMATED, no labels" in strict.stdout  # the table marks the value as estimated
