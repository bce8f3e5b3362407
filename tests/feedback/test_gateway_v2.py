"""Triton's own HTTP protocol through the real gateway: tritonclient.http unchanged (binary and JSON tensors,
metadata, readiness), the checks against the served config, and the prediction log behind it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from support import ADMIN_KEY, PREDICT_KEY, call

pytestmark = pytest.mark.e2e


def key() -> dict:
    """The API key header, a new dict each call: tritonclient adds its own headers to the dict it is given."""
    return {"X-API-Key": PREDICT_KEY}


@pytest.fixture
def gateway(stage, gateway_factory):
    """Inference over Triton's HTTP protocol (the other tests of the gateway cover gRPC)."""
    return gateway_factory(options=("--triton-http-url", stage["triton"].http_url, "--max-body-bytes", "100000"))


def client_of(url: str):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url.removeprefix("http://"))


def inputs_of(x: np.ndarray, binary: bool):
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("pixels", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return [tensor]


def read_log(log, folder: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in sorted(log.rglob(f"{folder}/**/*.parquet")) for row in pq.ParquetFile(path).read().to_pylist()]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_works_unchanged_and_answers_as_triton_does(stage, gateway, binary):
    import tritonclient.http as httpclient

    x = np.random.default_rng(1).random((3, 64), dtype=np.float32)
    direct = client_of(stage["triton"].http_url).infer("classifier", inputs_of(x, True)).as_numpy("probabilities")
    client = client_of(gateway.url)
    outputs = [httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("classifier", inputs_of(x, binary), outputs=outputs, headers=key(), request_id="r-7")
    np.testing.assert_allclose(result.as_numpy("probabilities"), direct, rtol=1e-6)
    response = result.get_response()
    assert response["model_name"] == "classifier" and response["model_version"] == "1" and response["id"] == "r-7"
    ids = response["parameters"]["mlctl_prediction_ids"].split(",")
    assert len(set(ids)) == 3
    versioned = client.infer("classifier", inputs_of(x, binary), model_version="1", headers=key())
    np.testing.assert_allclose(versioned.as_numpy("probabilities"), direct, rtol=1e-6)
    # the ids are issued: feedback for them is accepted, and the log holds the request's own features
    feedback = [{"prediction_id": i, "label": n} for n, i in enumerate(ids)]
    assert call(gateway.url, "/v1/feedback", {"feedback": feedback}, key=ADMIN_KEY)[0] == 202
    gateway.stop()
    logged = {r["prediction_id"]: r for r in read_log(gateway.log, "predictions")}
    assert [logged[i]["status"] for i in ids] == ["ok"] * 3
    np.testing.assert_allclose([logged[i]["features"] for i in ids], x, rtol=1e-6)
    assert [logged[i]["predicted"] for i in ids] == [int(np.argmax(row)) for row in direct]


def test_metadata_and_readiness_through_tritonclient(gateway):
    from tritonclient.utils import InferenceServerException

    client = client_of(gateway.url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("classifier", headers=key())
    metadata = client.get_model_metadata("classifier", headers=key())
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]
    assert metadata["outputs"][0]["name"] == "probabilities"
    with pytest.raises(InferenceServerException, match="ghost"):
        client.get_model_metadata("ghost", headers=key())
    assert not client.is_model_ready("ghost", headers=key())


def post(url: str, path: str, header: dict, binary: bytes = b"", key: str | None = PREDICT_KEY) -> tuple[int, dict]:
    text = json.dumps(header).encode()
    request = urllib.request.Request(url + path, data=text + binary, method="POST")
    if binary:
        request.add_header("Inference-Header-Content-Length", str(len(text)))
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()[:int(response.headers.get("Inference-Header-Content-Length") or 10**9)])
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def binary_input(x: np.ndarray, datatype: str = "FP32", size: int | None = None, shape=None) -> tuple[dict, bytes]:
    data = x.tobytes()
    tensor = {"name": "pixels", "datatype": datatype, "shape": list(shape or x.shape),
              "parameters": {"binary_data_size": len(data) if size is None else size}}
    return {"inputs": [tensor]}, data


CASES = {
    "byte count": (lambda x: binary_input(x, size=100), 400, "binary_data_size is 100 bytes but shape [2, 64] of FP32 takes 512"),
    "datatype": (lambda x: binary_input(x.astype(np.float64), "FP64"), 400, "has dtype float64, the model expects float32"),
    "shape": (lambda x: binary_input(x[:, :32].copy()), 400, "has shape [2, 32]"),
    "input name": (lambda x: ({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1], "data": [0.5]}]}, b""), 400,
                   "missing pixels"),
    "batch over the limit": (lambda x: binary_input(np.zeros((200, 64), np.float32)), 400, "exceeds the model's max batch size"),
    "non-finite": (lambda x: binary_input(np.where(np.arange(128).reshape(2, 64) == 70, np.inf, x).astype(np.float32)), 400,
                   "input 'pixels' row 1 holds inf"),
    "json data count": (lambda x: ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 63}]}, b""),
                        400, "63 values for shape [1, 64]"),
    "unknown datatype": (lambda x: binary_input(x, "BF16"), 400, "datatype 'BF16' is not supported"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_requests_that_do_not_fit_the_served_config_get_400_naming_what(gateway, case):
    x = np.random.default_rng(2).random((2, 64), dtype=np.float32)
    make, code, message = CASES[case]
    header, data = make(x)
    status, body = post(gateway.url, "/v2/models/classifier/infer", header, data)
    assert status == code, body
    assert message in body["error"]


def test_keys_body_limit_and_unknown_models_on_the_v2_route(gateway):
    header, data = binary_input(np.zeros((1, 64), np.float32))
    assert post(gateway.url, "/v2/models/classifier/infer", header, data, key=None)[0] == 401
    assert post(gateway.url, "/v2/models/classifier/infer", header, data, key="nope")[0] == 403
    status, body = post(gateway.url, "/v2/models/ghost/infer", header, data)
    assert status == 404 and "ghost" in body["error"]
    status, body = post(gateway.url, "/v2/models/classifier/versions/9/infer", header, data)
    assert status == 404 and "version 9" in body["error"]
    big_header, big = binary_input(np.zeros((400, 64), np.float32))  # 102 kB, over the 100 kB limit
    assert post(gateway.url, "/v2/models/classifier/infer", big_header, big)[0] == 413
    text = gateway.metrics()
    assert 'mlctl_gateway_requests_total{model="_unknown",route="infer",status="404",version=""} 1.0' in text
    assert 'route="infer",status="413"' in text and 'route="infer",status="401"' in text
