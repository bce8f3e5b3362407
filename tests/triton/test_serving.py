"""Against a real tritonserver: both stand-in backends, HTTP and gRPC, dynamic batching, output checks."""

import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from models_under_test import mlp, multi

from controlplane.errors import MlctlError, NotFoundError, UnavailableError, UsageError
from controlplane.triton.client import TritonClient, infer_file

pytestmark = pytest.mark.e2e


def eager(model, *arrays):
    with torch.inference_mode():
        out = model(*[torch.from_numpy(a) for a in arrays])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def metric(state, name: str, model: str) -> float:
    text = urllib.request.urlopen(state.metrics_url, timeout=5).read().decode()
    values = re.findall(rf'^{name}{{model="{model}",version="\d+"}} (\S+)$', text, re.M)
    return sum(float(v) for v in values)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("model_name", ["mlp", "mlp_ts"])
def test_inference_matches_eager(triton, protocol, model_name):
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    url = triton.grpc_url if protocol == "grpc" else triton.http_url
    with TritonClient(url, protocol) as client:
        result = client.infer(model_name, {"x": x})
    np.testing.assert_allclose(result.outputs["y"], eager(mlp(), x)[0], atol=1e-5)
    assert result.latency_ms > 0


@pytest.mark.parametrize("model_name", ["multi", "multi_ts"])
def test_multi_io_with_int64_and_bool(triton, model_name):
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, 10, (2, 6)).astype(np.int64)
    feats = rng.standard_normal((2, 5)).astype(np.float32)
    mask = np.array([[True, False], [True, True]])
    with TritonClient(triton.grpc_url) as client:
        result = client.infer(model_name, {"tokens": tokens, "feats": feats, "mask": mask})
    h, s = eager(multi(), tokens, feats, mask)
    np.testing.assert_allclose(result.outputs["h"], h, atol=1e-5)
    np.testing.assert_allclose(result.outputs["s"].reshape(-1), s, atol=1e-5)


def test_version_routing(triton):
    x = np.zeros((1, 8), np.float32)
    with TritonClient(triton.grpc_url) as client:
        assert client.infer("mlp", {"x": x}).version == "2"  # policy 'all': unversioned goes to the newest
        assert client.infer("mlp", {"x": x}, version="1").version == "1"
        with pytest.raises(NotFoundError, match="version 9"):
            client.infer("mlp", {"x": x}, version="9")


@pytest.mark.parametrize("model_name", ["mlp", "mlp_ts"])
def test_dynamic_batching_under_concurrent_requests(triton, model_name):
    """Concurrent single-row requests are answered correctly and share forwards (exec count < inference count)."""
    rows = np.random.default_rng(3).standard_normal((48, 1, 8)).astype(np.float32)
    before = (metric(triton, "nv_inference_count", model_name), metric(triton, "nv_inference_exec_count", model_name))
    with TritonClient(triton.grpc_url) as client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda r: client.infer(model_name, {"x": r}).outputs["y"], rows))
    expected = eager(mlp(), rows.reshape(48, 8))[0]
    np.testing.assert_allclose(np.concatenate(results), expected, atol=1e-5)
    inferences = metric(triton, "nv_inference_count", model_name) - before[0]
    executions = metric(triton, "nv_inference_exec_count", model_name) - before[1]
    assert inferences == 48
    assert executions < inferences, f"{executions} forwards for {inferences} requests: no batching happened"


def test_output_that_breaks_the_config_is_refused(triton):
    with TritonClient(triton.grpc_url) as client:
        with pytest.raises(MlctlError, match="output 'y' has dtype float32 but the config says float64"):
            client.infer("liar", {"x": np.zeros((1, 8), np.float32)})


def test_bad_requests_get_clear_errors(triton, tmp_path):
    (tmp_path / "bad.json").write_text('{"x": [[1, 2]]}')
    with TritonClient(triton.grpc_url) as client:
        with pytest.raises(UsageError, match=r"input 'x' has shape \[1, 2\]"):
            infer_file(client, "mlp", str(tmp_path / "bad.json"))
        # what slips past the client check is still refused by Triton itself, and mapped
        with pytest.raises(UsageError):
            client.infer("mlp", {"x": np.zeros((1, 8), np.float64)})


def test_server_down_is_unavailable():
    with pytest.raises(UnavailableError, match="not reachable"):
        with TritonClient("127.0.0.1:9", "grpc", timeout_s=2) as client:
            client.model_config("mlp")
    with pytest.raises(UnavailableError, match="not reachable"):
        with TritonClient("127.0.0.1:9", "http", timeout_s=2) as client:
            client.model_config("mlp")
