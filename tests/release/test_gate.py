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
    result = run_mlctl("-r", session_repo.uri, "promote", "classifier", "1", "--to", "qa", "--gate", "--gate-url", triton.grpc_url,
                       "--gate-thresholds", thresholds(min_accuracy=0.9999))
    assert result.returncode == 6 and "refused" in result.stderr and "nothing changed" in result.stderr
    assert json.loads(run_mlctl("-r", session_repo.uri, "history", "classifier", "--json").stdout)["history"] == []
