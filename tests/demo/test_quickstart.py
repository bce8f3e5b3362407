"""The README's main job, end to end, on its own ports: accuracy from Triton's answers over both protocols."""

import json

import pytest
from support import free_port, run_mlctl

pytestmark = pytest.mark.e2e


def test_quickstart_twice(tmp_path):
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    try:
        first = run_mlctl("-r", "repo", "quickstart", *ports, "--json", cwd=tmp_path)
        assert first.returncode == 0, first.stderr
        result = json.loads(first.stdout)
        evals = result["evaluations"]
        assert {(e["model"], e["version"], e["protocol"]) for e in evals} == {
            (m, v, p) for m in ("digits", "digits_torchscript") for v in (1, 2) for p in ("http", "grpc")
        }
        for e in evals:
            assert e["samples"] == 360
            assert e["accuracy"] == pytest.approx(e["offline_accuracy"], abs=1 / 360)  # Triton agrees with eager
        by_version = {e["version"]: e["accuracy"] for e in evals if e["model"] == "digits" and e["protocol"] == "grpc"}
        assert by_version[2] > 0.9 and by_version[2] >= by_version[1]
        assert sorted(result["published"]) == ["digits:1", "digits:2", "digits_torchscript:1", "digits_torchscript:2"]
        assert result["server"]["name"] == "quickstart"  # its own server, not the user's "default"

        # idempotent: a second run reuses the published versions and succeeds again
        second = run_mlctl("-r", "repo", "quickstart", *ports, "--json", cwd=tmp_path)
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout)
        assert again["published"] == [] and len(again["reused"]) == 4
        listing = json.loads(run_mlctl("-r", "repo", "model", "list", "--json", cwd=tmp_path).stdout)
        assert {m["name"]: m["versions"] for m in listing["models"]} == {"digits": [1, 2], "digits_torchscript": [1, 2]}
        sample = run_mlctl("infer", "digits", "-i", again["sample_file"], "--server", "quickstart", cwd=tmp_path)
        assert sample.returncode == 0 and "version 2" in sample.stdout
    finally:
        run_mlctl("server", "stop", "--name", "quickstart", cwd=tmp_path)


@pytest.mark.parametrize("other", ["another repository", "a channel replica"])
def test_quickstart_never_stops_a_server_it_does_not_own(triton, tmp_path, other):
    """The user's server named like the quickstart's: refused before any training, and left running."""
    from dataclasses import replace

    from controlplane.processes import process_exists
    from controlplane.triton.server.state import StateFiles

    repo = tmp_path / "repo"
    users = replace(triton, name="default") if other == "another repository" else replace(
        triton, name="default", repository=str(repo), channel="staging")
    StateFiles(tmp_path / "mlctl-home").write(users)  # the session's real server, under the user's name
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    result = run_mlctl("-r", str(repo), "quickstart", "--name", "default", *ports, cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    serves = f"repository {users.repository}" + (" as a replica of channel 'staging'" if users.channel else "")
    assert f"server 'default' (pid {triton.pid}, http {triton.http_url}) serves {serves}" in result.stderr
    assert "mlctl server stop --name default" in result.stderr and "training" not in result.stderr
    assert result.stdout == "" and process_exists(triton.pid) and not repo.exists()
