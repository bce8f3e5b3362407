"""The gateway against a real Triton, its prediction log, and quality monitoring on a controlled shift."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import (
    ADMIN_KEY,
    call,
    free_port,
    run_mlctl,
    start_gateway,
    wait_until,
)

pytestmark = pytest.mark.e2e
@pytest.fixture(scope="module")
def gateway(triton, tmp_path_factory):
    log = tmp_path_factory.mktemp("prediction-log")
    proc, url = start_gateway(triton, log, "--flush-rows", "100", "--flush-seconds", "0.5", "--max-body-bytes", "200000")
    yield {"url": url, "log": log, "proc": proc}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_predict_returns_outputs_class_version_and_ids(gateway):
    rows = np.random.default_rng(0).random((3, 64)).round(3).tolist()
    status, body = call(gateway["url"], "/v1/models/classifier/predict", {"inputs": {"pixels": rows}})
    assert status == 200, body
    assert body["model"] == "classifier" and body["version"] == "1"
    assert len(body["predictions"]) == 3 and len({p["prediction_id"] for p in body["predictions"]}) == 3
    first = body["predictions"][0]
    assert first["predicted_class"] == int(np.argmax(first["probabilities"]))
    assert abs(sum(first["probabilities"]) - 1) < 1e-4
    ok, ready = call(gateway["url"], "/readyz", key=None)
    assert ok == 200 and ready["ready"] is True
    status, schema = call(gateway["url"], "/openapi.json", key=None)
    assert status == 200 and "/v1/models/{model}/predict" in schema["paths"]


@pytest.mark.parametrize("case", ["shape", "dtype", "missing input", "unknown model", "bad json", "no key", "wrong key",
                                  "too large", "not an object", "feedback with predict key"])
def test_bad_requests_get_a_4xx_and_the_gateway_stays_up(gateway, case):
    url, path = gateway["url"], "/v1/models/classifier/predict"
    good = [[0.0] * 64]
    expected = {
        "shape": (lambda: call(url, path, {"inputs": {"pixels": [[0.0] * 63]}}), 422, "has shape [1, 63]"),
        "dtype": (lambda: call(url, path, {"inputs": {"pixels": [["a"] * 64]}}), 422, "non-numeric"),
        "missing input": (lambda: call(url, path, {"inputs": {"image": good}}), 422, "missing pixels"),
        "unknown model": (lambda: call(url, "/v1/models/ghost/predict", {"inputs": {"pixels": good}}), 404, "ghost"),
        "bad json": (lambda: call(url, path, raw=b"{not json"), 400, "not JSON"),
        "no key": (lambda: call(url, path, {"inputs": {"pixels": good}}, key=None), 401, "missing X-API-Key"),
        "wrong key": (lambda: call(url, path, {"inputs": {"pixels": good}}, key="nope"), 403, "may not predict"),
        "too large": (lambda: call(url, path, {"inputs": {"pixels": [[0.5] * 64] * 1000}}), 413, "larger than 200000 bytes"),
        "not an object": (lambda: call(url, path, [1, 2]), 422, "inputs"),
        "feedback with predict key": (lambda: call(url, "/v1/feedback", {"prediction_id": "x", "label": 1}), 403, "may not admin"),
    }
    run, code, message = expected[case]
    status, body = run()
    assert status == code, body
    assert message in json.dumps(body)
    assert call(url, "/healthz", key=None)[0] == 200


def test_metrics_count_requests(gateway):
    call(gateway["url"], "/v1/models/classifier/predict", {"inputs": {"pixels": [[0.0] * 64]}})
    status, body = call(gateway["url"], "/metrics", key=None)
    assert status == 200
    assert 'mlctl_gateway_requests_total{model="classifier",route="predict",status="ok",version="1"}' in body["text"]
    assert "mlctl_gateway_request_duration_seconds_bucket" in body["text"]


@pytest.fixture
def own_gateway(triton, tmp_path):
    """A gateway with a log of its own: no other test's predictions in the monitored window."""
    proc, url = start_gateway(triton, tmp_path / "own-log", "--flush-rows", "100", "--flush-seconds", "0.5")
    yield {"url": url, "log": tmp_path / "own-log", "proc": proc}
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_feedback_loop_detects_a_controlled_shift_and_stays_quiet_without_one(own_gateway, digits_split, session_repo, tmp_path):
    """Unshifted stream with true labels: no alarm. Then noisy inputs and one class's labels flipped: alarms."""
    gateway = own_gateway
    url = gateway["url"]

    def stream(x: np.ndarray, labels: np.ndarray) -> None:
        for start in range(0, len(x), 8):
            status, body = call(url, "/v1/models/classifier/predict", {"inputs": {"pixels": x[start:start + 8].tolist()}})
            assert status == 200, body
            feedback = [{"prediction_id": p["prediction_id"], "label": int(y)}
                        for p, y in zip(body["predictions"], labels[start:start + 8])]
            assert call(url, "/v1/feedback", {"feedback": feedback}, key=ADMIN_KEY)[0] == 202

    x_stream, y_stream = digits_split["stream"]
    stream(x_stream, y_stream)
    time.sleep(1.5)  # two flush intervals
    env = {"MLCTL_REPOSITORY": session_repo.uri, "MLCTL_PREDICTION_LOG": str(gateway["log"])}
    quiet = run_mlctl("monitor", "check", "classifier", "--window", "10m", "--min-coverage", "0.9", env=env)
    assert quiet.returncode == 0, quiet.stderr
    report = json.loads(run_mlctl("monitor", "report", "classifier", "--window", "10m", "--json", env=env).stdout)["versions"]["1"]
    assert report["labelled"] == len(y_stream) == report["predictions"]
    assert report["coverage"] > 0.95 and report["label_delay"]["median_s"] >= 0
    assert report["data_drift"]["drifted"] == [] and report["concept_drift"]["drifted"] is False
    from sklearn.metrics import f1_score

    html = tmp_path / "report.html"
    assert run_mlctl("monitor", "report", "classifier", "--window", "10m", "--html", str(html), env=env).returncode == 0
    assert "<svg" in html.read_text() and "classifier" in html.read_text()  # its charts are tested in tests/quality

    rng = np.random.default_rng(7)
    shifted = np.clip(x_stream + rng.normal(0.35, 0.1, x_stream.shape), 0, 1).astype(np.float32)
    flipped = np.where(y_stream == 3, 5, y_stream)
    stream(shifted, flipped)
    time.sleep(1.5)
    alarm = run_mlctl("monitor", "check", "classifier", "--window", "10m", env=env)
    assert alarm.returncode == 6
    assert "drifted features" in alarm.stderr and "concept drift" in alarm.stderr
    after = json.loads(run_mlctl("monitor", "report", "classifier", "--window", "10m", "--json", env=env).stdout)["versions"]["1"]
    assert after["prediction_drift"]["drifted"] is True
    # the per-class figures are scikit-learn's on the same joined data
    import pyarrow as pa
    import pyarrow.parquet as pq

    def read(pattern: str) -> dict:
        return pa.concat_tables([pq.ParquetFile(p).read() for p in Path(gateway["log"]).rglob(pattern)]).to_pydict()

    predictions, feedback = read("predictions/**/*.parquet"), read("feedback/*.parquet")
    labels = dict(zip(feedback["prediction_id"], feedback["label"]))
    pairs = [(labels[i], p) for i, p in zip(predictions["prediction_id"], predictions["predicted"]) if i in labels]
    y_true, y_pred = zip(*pairs)
    classes = after["quality"]["labels"]
    expected = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    np.testing.assert_allclose([c["f1"] for c in after["quality"]["classes"]], expected)


def test_clean_shutdown_flushes_every_prediction(triton, tmp_path):
    log = tmp_path / "log"
    proc, url = start_gateway(triton, log, "--flush-rows", "100000", "--flush-seconds", "3600")
    for _ in range(25):
        assert call(url, "/v1/models/classifier/predict", {"inputs": {"pixels": [[0.1] * 64, [0.2] * 64]}}, key=ADMIN_KEY)[0] == 200
    assert not list(log.rglob("*.parquet"))  # nothing flushed yet: the batch is neither full nor old
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal
    import pyarrow.parquet as pq

    assert sum(pq.ParquetFile(p).metadata.num_rows for p in log.rglob("predictions/**/*.parquet")) == 50


def test_gateway_refuses_to_start_without_keys(triton):
    result = run_mlctl("gateway", "serve", "--port", str(free_port()), "--triton-url", triton.grpc_url)
    assert result.returncode == 2 and "needs at least one admin key" in result.stderr


def test_every_output_of_a_two_output_model_is_logged(gateway):
    """The first output is the log's `outputs`; the second (a scalar per row here) is kept by name in `more_outputs`,
    as an embedding would be."""
    from controlplane.feedback.predlog import read_tables
    from controlplane.quality.window import named_output
    from controlplane.store import open_store

    inputs = {"tokens": [[1, 2, 3], [4, 5, 6]], "feats": [[0.1] * 5, [0.2] * 5], "mask": [[True, False], [True, True]]}
    status, body = call(gateway["url"], "/v1/models/multi/predict", {"inputs": inputs})
    assert status == 200, body
    ids = [p["prediction_id"] for p in body["predictions"]]

    def logged():
        predictions = read_tables(open_store(str(gateway["log"])), "multi")[0]
        return predictions.filter(pc.is_in(predictions["prediction_id"], pa.array(ids))) if predictions.num_rows else None

    wait_until(lambda: logged() is not None and logged().num_rows == 2, 10, "the two rows in the prediction log")
    table = logged()
    order = np.array([ids.index(i) for i in table["prediction_id"].to_pylist()])
    s = named_output(table["more_outputs"], np.arange(2), "s")[:, 0]
    assert np.allclose(s, np.ravel([body["predictions"][i]["outputs"]["s"] for i in order]), atol=1e-5)
    assert named_output(table["more_outputs"], np.arange(2), "h") is None  # the first output is `outputs`, not repeated
