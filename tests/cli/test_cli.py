"""The `mlctl` console script as a user runs it: exit code, stdout and stderr, one path each."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
from support import free_port, run_mlctl


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


def fails(result, code: int, message: str):
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def repo_dir(tmp_path):
    path = tmp_path / "repo"
    path.mkdir()
    return path


def test_help_imports_nothing_heavy():
    code = "import sys, controlplane.cli.main; print([m for m in ('torch','tritonclient','onnx','onnxruntime','boto3','numpy','grpc') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    result = ok(run_mlctl("--help"))
    assert "MLCTL_REPOSITORY" in result.stdout and "export" in result.stdout


def test_export_publish_list_show_verify(tmp_path, repo_dir):
    out = tmp_path / "export"
    exported = json.loads(ok(run_mlctl("export", "models_under_test:mlp", "-i", "x:float32:8", "--output", "y", "--out", str(out), "--json")).stdout)
    assert exported["parity"]["onnx"]["passed"] and exported["formats"] == ["onnx", "torchscript"]
    fails(run_mlctl("-r", str(repo_dir), "publish", str(out), "--name", "m"), 2, "choose one with --format")
    published = json.loads(ok(run_mlctl("-r", str(repo_dir), "publish", str(out), "-n", "m", "-f", "onnx", "-m", "accuracy=0.93", "--json")).stdout)
    assert published["version"] == 1 and published["metadata"] == {"accuracy": 0.93}
    listing = json.loads(ok(run_mlctl("-r", str(repo_dir), "model", "list", "--json")).stdout)
    assert listing["models"][0]["name"] == "m" and listing["models"][0]["versions"] == [1]
    versions = json.loads(ok(run_mlctl("-r", str(repo_dir), "model", "versions", "m", "--json")).stdout)
    assert versions["versions"][0]["parity_passed"] is True
    assert json.loads(ok(run_mlctl("-r", str(repo_dir), "model", "show", "m", "1")).stdout)["format"] == "onnx"
    ok(run_mlctl("-r", str(repo_dir), "model", "verify", "m", "1"))
    (repo_dir / "m" / "1" / "model.onnx").write_bytes(b"tampered")
    fails(run_mlctl("-r", str(repo_dir), "model", "verify", "m", "1"), 6, "model.onnx: sha256 differs")
    fails(run_mlctl("-r", str(repo_dir), "model", "show", "m", "9"), 3, "version 9 of model 'm' not found")
    fails(run_mlctl("-r", str(repo_dir), "model", "versions", "ghost"), 3, "model 'ghost' not found")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["models_under_test:mlp", "-i", "x:float32"], 2, "is not name:dtype:dims"),
        (["models_under_test:mlp", "-i", "x:float99:8"], 2, "dtype 'float99' is not supported"),
        (["no.such.module:f", "-i", "x:float32:8"], 2, "module 'no.such.module' not found"),
        (["models_under_test:missing", "-i", "x:float32:8"], 2, "has no attribute 'missing'"),
        (["models_under_test:mlp", "-i", "x:float32:3"], 2, "failed on inputs shaped by the spec"),
        (["models_under_test:broken", "-i", "x:float32:3"], 6, "parity check failed"),
        (["models_under_test:mlp", "-i", "x:float32:8", "--format", "tflite"], 2, "tflite"),
    ],
)
def test_export_errors(tmp_path, args, code, message):
    out = tmp_path / "out"
    result = fails(run_mlctl("export", *args, "--out", str(out)), code, message)
    assert result.stdout == ""
    assert not out.exists()


def test_publish_errors(tmp_path, repo_dir, exports):
    fails(run_mlctl("-r", str(repo_dir), "publish", str(tmp_path / "no-export"), "-n", "m"), 3, "is not an export")
    fails(run_mlctl("-r", str(repo_dir), "publish", str(exports["mlp"].path), "-n", "m", "-f", "onnx", "--version-policy", "newest"), 2, "version policy")
    fails(run_mlctl("-r", str(repo_dir), "publish", str(exports["mlp"].path), "-n", "m", "-f", "onnx", "-m", "novalue"), 2, "not key=value")
    assert list(repo_dir.iterdir()) == []


def test_the_first_publish_creates_a_local_repository(tmp_path, exports):
    new = tmp_path / "new" / "repo"
    result = ok(run_mlctl("-r", str(new), "publish", str(exports["mlp"].path), "-n", "m", "-f", "onnx", "--json"))
    assert json.loads(result.stdout)["version"] == 1 and (new / "m" / "1" / "manifest.json").is_file()
    assert f"created the model repository {new}" in result.stderr
    ok(run_mlctl("-r", str(new), "publish", str(exports["mlp"].path), "-n", "m", "-f", "onnx"))  # the second says nothing
    # anything else on a missing repository is still "not found", and creates nothing
    fails(run_mlctl("-r", str(tmp_path / "nowhere"), "model", "list"), 3, "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_usage_errors_exit_2():
    assert run_mlctl("nonsense").returncode == 2
    assert run_mlctl("export").returncode == 2


@pytest.mark.e2e
def test_infer_paths(triton, tmp_path):
    url = ["--url", triton.grpc_url]
    (tmp_path / "good.json").write_text(json.dumps({"x": [[0.0] * 8, [1.0] * 8]}))
    result = json.loads(ok(run_mlctl("infer", "mlp", "-i", "good.json", *url, "--json")).stdout)
    assert result["version"] == 2 and np.array(result["outputs"]["y"]).shape == (2, 4)
    http = ok(run_mlctl("infer", "mlp_ts", "-i", "good.json", "--protocol", "http", "--url", triton.http_url, "--version", "1"))
    assert "version 1 via http" in http.stdout
    (tmp_path / "text.json").write_text('{"x": [["a", "b", "c", "d", "e", "f", "g", "h"]]}')
    fails(run_mlctl("infer", "mlp", "-i", "text.json", *url), 2, "non-numeric")
    np.save(tmp_path / "wide.npy", np.zeros((1, 9), np.float32))
    fails(run_mlctl("infer", "mlp", "-i", "wide.npy", *url), 2, "has shape [1, 9], the model expects x: float32[batch, 8]")
    np.save(tmp_path / "f64.npy", np.zeros((1, 8), np.float64))
    fails(run_mlctl("infer", "mlp", "-i", "f64.npy", *url), 2, "dtype float64, the model expects float32")
    missing = fails(run_mlctl("infer", "mlp", "-i", "good.json", *url, "--version", "5"), 3, "version 5 of 'mlp' is not loaded")
    assert "version policy 'all' loads every version" in missing.stderr
    fails(run_mlctl("infer", "ghost", "-i", "good.json", *url), 3, "'ghost'")
    fails(run_mlctl("infer", "mlp", "-i", "missing.json", *url), 3, "input file missing.json not found")
    fails(run_mlctl("infer", "mlp", "-i", "good.json", "--url", f"127.0.0.1:{free_port()}"), 5, "not reachable")


def test_server_start_errors(tmp_path, repo_dir, exports):
    fails(run_mlctl("-r", str(tmp_path / "nowhere"), "server", "start"), 3, "does not exist")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        fails(run_mlctl("-r", str(repo_dir), "server", "start", "--http-port", str(busy)), 4, f"http port {busy} on 127.0.0.1 is in use")
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    fails(run_mlctl("-r", str(repo_dir), "server", "start", *ports, env={"MLCTL_TRITONSERVER": str(tmp_path / "no-binary")}), 3, "tritonserver binary")
    fails(run_mlctl("-r", str(repo_dir), "server", "start", "--runtime", "docker", *ports, env={"DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}"}), 5, "no Docker engine is reachable")
    fails(run_mlctl("-r", str(repo_dir), "server", "start", "--model", "ghost", *ports), 3, "ghost")
    from controlplane.model.config import ServingOptions
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    Repository(open_store(str(repo_dir))).publish(exports["mlp"], "mlp", "onnx", ServingOptions())
    unpromoted = fails(run_mlctl("-r", str(repo_dir), "server", "start", "--channel", "production", "-m", "mlp", *ports), 3,
                       "have no version promoted to channel 'production'")
    assert "models there: none" not in unpromoted.stderr and "mlctl promote mlp VERSION --to production" in unpromoted.stderr
    stopped = fails(run_mlctl("server", "stop", "--name", "nosuch"), 3, "no server named 'nosuch'")
    assert stopped.stdout == ""
    assert run_mlctl("server", "status").returncode == 1
    down = run_mlctl("server", "status", "--json")
    assert down.returncode == 1 and json.loads(down.stdout)["running"] is False  # --json exits as the text does


@pytest.mark.e2e
def test_server_exiting_during_start_shows_the_log(tmp_path, repo_dir, exports):
    from controlplane.model.config import ServingOptions
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    Repository(open_store(str(repo_dir))).publish(exports["mlp"], "corrupt", "onnx", ServingOptions())
    (repo_dir / "corrupt" / "1" / "model.onnx").write_bytes(b"not an onnx graph")
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    result = fails(run_mlctl("-r", str(repo_dir), "server", "start", *ports), 7, "during start-up; last lines of")
    assert "corrupt" in result.stderr
    assert run_mlctl("server", "status").returncode == 1  # nothing left behind


@pytest.mark.e2e
def test_server_lifecycle(tmp_path, repo_dir, exports):
    from controlplane.model.config import ServingOptions
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    repo = Repository(open_store(str(repo_dir)))
    repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions())
    repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions())  # the default policy latest:1 loads only v2
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    state = json.loads(ok(run_mlctl("-r", str(repo_dir), "server", "start", *ports, "--json")).stdout)
    try:
        fails(run_mlctl("-r", str(repo_dir), "server", "start", *ports), 4, "already running")
        status = json.loads(ok(run_mlctl("server", "status", "--json")).stdout)
        assert status["running"] and status["ready"] and status["pid"] == state["pid"]
        (tmp_path / "in.json").write_text(json.dumps({"x": [[0.5] * 8]}))
        assert "version 2 via grpc" in ok(run_mlctl("infer", "mlp", "-i", "in.json")).stdout  # ports from the state file
        old = fails(run_mlctl("infer", "mlp", "-i", "in.json", "--version", "1"), 3, "version 1 of 'mlp' is not loaded")
        assert "its version policy is latest:1, so Triton loads the newest version" in old.stderr
        assert "mlctl promote mlp 1 --to CHANNEL" in old.stderr
        assert "successfully loaded 'mlp'" in ok(run_mlctl("server", "logs", "-n", "200")).stdout
    finally:
        ok(run_mlctl("server", "stop"))
    assert not json.loads(run_mlctl("server", "status", "--json").stdout)["running"]
    fails(run_mlctl("server", "stop"), 3, "no server named 'default'")  # its state is gone
    assert not (tmp_path / "mlctl-home" / "servers" / "default.json").exists()
