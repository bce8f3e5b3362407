"""The gateway's edge checks and fault accounting, against a real Triton and the real gateway process:
non-finite inputs, feedback for unknown ids and labels, metric label cardinality, unreadable canary state,
an unwritable prediction log, and shadow records that feedback can label.

A Triton of its own serves copies of the session's digits classifier: `classifier`, its canary model
(`classifier.canary`) and `lenient`, whose config declares mlctl.allow_non_finite.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from support import ADMIN_KEY, PREDICT_KEY, call, wait_until

from controlplane.release.canary import CanaryState, CanaryStore
from controlplane.store import open_store

pytestmark = pytest.mark.e2e
PREDICT = "/v1/models/{}/predict"


def post_raw(url: str, path: str, raw: bytes, key: str = PREDICT_KEY) -> tuple[int, str]:
    request = urllib.request.Request(url + path, data=raw, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def strict_json(text: str):
    """JSON as RFC 8259 has it: NaN and Infinity are not numbers."""
    def refuse(constant: str):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def read_log(log: Path, folder: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in sorted(log.rglob(f"{folder}/**/*.parquet")) for row in pq.ParquetFile(path).read().to_pylist()]


def rows(n: int, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).random((n, 64)).round(3).tolist()


def predict(gateway, model: str = "classifier", n: int = 2, seed: int = 0) -> list[str]:
    status, body = call(gateway.url, PREDICT.format(model), {"inputs": {"pixels": rows(n, seed)}})
    assert status == 200, body
    return [p["prediction_id"] for p in body["predictions"]]


# --- 2. non-finite inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_input_gets_422_naming_input_and_row_and_is_never_logged_ok(gateway_factory, tmp_path, bad):
    gateway = gateway_factory()
    good = json.dumps(rows(3))[1:-1]
    body = f'{{"inputs": {{"pixels": [{good}, [0.5, {bad}{", 0.5" * 62}]]}}}}'.encode()
    status, text = post_raw(gateway.url, PREDICT.format("classifier"), body)
    assert status == 422, text
    detail = json.loads(text)["detail"]
    assert "'pixels' row 3" in detail and "mlctl.allow_non_finite" in detail
    issued = predict(gateway, n=2)
    gateway.stop()  # flushes the log
    logged = read_log(tmp_path / "log", "predictions")
    assert [r["prediction_id"] for r in logged if r["status"] == "ok"] == issued
    assert all(math.isfinite(x) for r in logged for x in r["features"])


def test_non_finite_refusal_is_counted_as_422(gateway_factory):
    gateway = gateway_factory()
    status, _ = post_raw(gateway.url, PREDICT.format("classifier"), b'{"inputs": {"pixels": [[NaN' + b", 0" * 63 + b"]]}}")
    assert status == 422
    assert 'mlctl_gateway_requests_total{model="classifier",route="predict",status="422",version=""} 1.0' in gateway.metrics()


def test_model_declaring_allow_non_finite_answers_strict_json_and_logs_nan(gateway_factory, tmp_path):
    gateway = gateway_factory()
    nan_row = "[NaN" + ", 0.25" * 63 + "]"
    null_row = "[null" + ", 0.25" * 63 + "]"  # strict-JSON clients send NaN as null
    finite_row = json.dumps(rows(1)[0])
    status, text = post_raw(gateway.url, PREDICT.format("lenient"),
                            f'{{"inputs": {{"pixels": [{nan_row}, {null_row}, {finite_row}]}}}}'.encode())
    assert status == 200, text
    answer = strict_json(text)  # raises on NaN/Infinity
    first, second, third = answer["predictions"]
    assert first["probabilities"] == [None] * 10 and first["predicted_class"] is None
    assert second["probabilities"] == [None] * 10
    assert third["predicted_class"] == int(np.argmax(third["probabilities"]))
    gateway.stop()
    logged = {r["prediction_id"]: r for r in read_log(tmp_path / "log", "predictions")}
    assert {r["status"] for r in logged.values()} == {"ok"}
    assert math.isnan(logged[first["prediction_id"]]["features"][0])
    assert math.isnan(logged[second["prediction_id"]]["features"][0])
    assert math.isfinite(logged[third["prediction_id"]]["features"][0])


# --- 3. feedback checks --------------------------------------------------------------------------------
def test_feedback_for_an_unknown_id_gets_404_and_nothing_is_written(gateway_factory, tmp_path):
    gateway = gateway_factory()
    issued = predict(gateway, n=2)
    ghost = uuid.uuid4().hex
    status, body = call(gateway.url, "/v1/feedback", {"prediction_id": ghost, "label": 1}, key=ADMIN_KEY)
    assert status == 404 and ghost in body["detail"]
    batch = [{"prediction_id": issued[0], "label": 1}, {"prediction_id": ghost, "label": 2}]
    status, body = call(gateway.url, "/v1/feedback", {"feedback": batch}, key=ADMIN_KEY)
    assert status == 404 and ghost in body["detail"]
    assert call(gateway.url, "/v1/feedback", {"prediction_id": issued[1], "label": 9}, key=ADMIN_KEY)[0] == 202
    gateway.stop()
    assert [(r["prediction_id"], r["label"]) for r in read_log(tmp_path / "log", "feedback")] == [(issued[1], 9)]


@pytest.mark.parametrize("label", [10, 99, -1])
def test_label_outside_the_models_classes_gets_422_naming_the_range(gateway_factory, tmp_path, label):
    gateway = gateway_factory()
    issued = predict(gateway, n=2)
    batch = [{"prediction_id": issued[0], "label": 3}, {"prediction_id": issued[1], "label": label}]
    status, body = call(gateway.url, "/v1/feedback", {"feedback": batch}, key=ADMIN_KEY)
    assert status == 422 and "[0, 10)" in body["detail"] and issued[1] in body["detail"]
    gateway.stop()
    assert read_log(tmp_path / "log", "feedback") == []  # the good item of the batch was not written either


def test_feedback_for_ids_issued_before_a_restart_is_checked_against_the_log(gateway_factory, tmp_path):
    first = gateway_factory()
    issued = predict(first, n=3)
    first.stop()  # flushes; the next gateway (a restart, or another replica) never saw these ids
    second = gateway_factory()
    status, body = call(second.url, "/v1/feedback", {"prediction_id": issued[0], "label": 12}, key=ADMIN_KEY)
    assert status == 422 and "[0, 10)" in body["detail"]
    feedback = [{"prediction_id": i, "label": n} for n, i in enumerate(issued)]
    status, body = call(second.url, "/v1/feedback", {"feedback": feedback}, key=ADMIN_KEY)
    assert status == 202 and body == {"accepted": 3}
    assert call(second.url, "/v1/feedback", {"prediction_id": uuid.uuid4().hex, "label": 1}, key=ADMIN_KEY)[0] == 404


# --- 4. metric label cardinality -----------------------------------------------------------------------
def test_unknown_model_names_do_not_become_metric_labels(gateway_factory):
    gateway = gateway_factory()
    predict(gateway, n=1)
    names = [f"ghost{uuid.uuid4().hex[:12]}" for _ in range(20)]
    for name in names:
        status, body = call(gateway.url, PREDICT.format(name), {"inputs": {"pixels": rows(1)}})
        assert status == 404 and name in body["detail"]
    text = gateway.metrics()
    assert not [name for name in names if name in text]
    assert 'mlctl_gateway_requests_total{model="_unknown",route="predict",status="404",version=""} 20.0' in text
    assert 'model="classifier"' in text


# --- 5. faults are warned about and counted --------------------------------------------------------------
def running_shadow_canary(repo: Path) -> Path:
    """classifier: a running canary (v2, served as classifier.canary) in shadow mode; returns its state file."""
    now = datetime.now(UTC).isoformat()
    state = CanaryState(model="classifier", channel="production", stable=1, canary=2, weight=100.0, steps=(100.0,), step_index=0,
                        interval_s=60.0, status="running", started_at=now, step_started_at=now, shadow=True)
    states = CanaryStore(open_store(str(repo)))
    _, token = states.load("classifier")
    states.save(state, token)
    return repo / states.key("classifier")


def counter(text: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name)


def test_unreadable_canary_state_keeps_the_last_known_routing_warns_and_counts(stage, gateway_factory, tmp_path):
    state_file = running_shadow_canary(stage["repo"])
    try:
        gateway = gateway_factory(repository=stage["repo"])
        before = predict(gateway, n=2, seed=1)
        state_file.write_text("{not json")
        after: list[str] = []

        def counted() -> bool:
            after.extend(predict(gateway, n=1, seed=2))
            return counter(gateway.metrics(), "mlctl_gateway_canary_state_errors_total") >= 1

        wait_until(counted, 30, "the gateway's next read of the (corrupt) canary state")
        after.extend(predict(gateway, n=2, seed=3))  # surely after the failed read
        gateway.stop()
    finally:
        state_file.unlink()
    logged = read_log(tmp_path / "log", "predictions")
    shadowed = {r["prediction_id"] for r in logged if r["status"] == "shadow-ok"}
    assert set(before) <= shadowed
    assert set(after) <= shadowed  # routing went on with the last known state
    assert "canary state of model 'classifier'" in gateway.stderr and "could not be read" in gateway.stderr


def test_unwritable_prediction_log_is_warned_about_and_counted(gateway_factory, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    (log / "predictions").write_text("a regular file where the predictions folder goes: not even root can write below it")
    gateway = gateway_factory(log=log)
    predict(gateway, n=3)

    def counted() -> bool:
        return counter(gateway.metrics(), "mlctl_gateway_log_write_errors_total") >= 1

    wait_until(counted, 30, "the failed segment write counted")
    text = gateway.metrics()
    assert counter(text, "mlctl_gateway_log_dropped") >= 3
    wait_until(lambda: "not written" in gateway.stderr, 10, "the warning on stderr")
    assert "3 records lost" in gateway.stderr


# --- 6. shadow records share the client's ids -----------------------------------------------------------
def test_shadow_records_carry_the_clients_ids_so_feedback_labels_both_arms(stage, gateway_factory, tmp_path):
    state_file = running_shadow_canary(stage["repo"])
    try:
        gateway = gateway_factory(repository=stage["repo"])
        issued = [i for seed in range(4) for i in predict(gateway, n=3, seed=seed)]
        feedback = [{"prediction_id": i, "label": n % 10} for n, i in enumerate(issued)]
        assert call(gateway.url, "/v1/feedback", {"feedback": feedback}, key=ADMIN_KEY)[0] == 202
        gateway.stop()  # waits for the mirrored requests, then flushes
    finally:
        state_file.unlink()
    logged = read_log(tmp_path / "log", "predictions")
    by_id: dict[str, dict[str, dict]] = {}
    for record in logged:
        by_id.setdefault(record["prediction_id"], {})[record["status"]] = record
    assert set(by_id) == set(issued)
    for prediction_id in issued:
        arms = by_id[prediction_id]
        assert set(arms) == {"ok", "shadow-ok"}
        stable, canary = arms["ok"], arms["shadow-ok"]
        assert (stable["version"], canary["version"]) == ("1", "2")
        assert canary["predicted"] is not None and len(canary["outputs"]) == 10
        assert canary["features"] == stable["features"] and len(canary["features"]) == 64
        assert canary["predicted"] == stable["predicted"]  # the same weights in both arms
    labels = {r["prediction_id"]: r["label"] for r in read_log(tmp_path / "log", "feedback")}
    assert set(labels) == set(issued)


# --- admission control -----------------------------------------------------------------------------------
def test_requests_beyond_max_in_flight_are_refused_at_once_with_429_and_counted(gateway_factory):
    """--max-in-flight 1: of 32 clients at once, those that find a request of the model already at Triton are
    answered 429 with Retry-After in a moment (they never reach Triton); the rest are answered, and the 429s are
    counted as the rejected requests of that model."""
    import threading
    import time

    gateway = gateway_factory(options=("--max-in-flight", "1"))
    results: list[tuple[int, float, str | None]] = []
    lock, go = threading.Lock(), threading.Event()

    def client(seed: int) -> None:
        go.wait()
        for i in range(10):
            request = urllib.request.Request(gateway.url + PREDICT.format("classifier"), method="POST",
                                             data=json.dumps({"inputs": {"pixels": rows(1, seed * 10 + i)}}).encode())
            request.add_header("Content-Type", "application/json")
            request.add_header("X-API-Key", PREDICT_KEY)
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    outcome = (response.status, time.perf_counter() - started, None)
            except urllib.error.HTTPError as exc:
                outcome = (exc.code, time.perf_counter() - started, exc.headers.get("Retry-After"))
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join()
    statuses = [status for status, _, _ in results]
    assert len(results) == 320 and set(statuses) <= {200, 429}, sorted(set(statuses))
    refused = [(seconds, retry) for status, seconds, retry in results if status == 429]
    assert refused and statuses.count(200) > 0  # 32 clients at once cannot all find the model free
    assert all(retry == "1" for _, retry in refused)
    metrics = gateway.metrics()
    assert f'mlctl_gateway_requests_total{{model="classifier",route="predict",status="429",version=""}} {len(refused)}.0' in metrics
    assert 'mlctl_gateway_requests_total{model="classifier",route="predict",status="ok"' in metrics


def test_a_negative_max_in_flight_is_a_usage_error(stage, tmp_path):
    from support import run_mlctl

    refused = run_mlctl("gateway", "serve", "--triton-url", stage["triton"].grpc_url, "--max-in-flight", "-1",
                        env={"MLCTL_GATEWAY_ADMIN_KEYS": ADMIN_KEY})
    assert refused.returncode == 2 and "--max-in-flight must not be negative" in refused.stderr
