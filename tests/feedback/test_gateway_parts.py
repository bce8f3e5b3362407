"""The gateway's pure parts, without servers: answers and log records, the non-finite check, the id index,
the model-config policy, and finding issued ids in a prediction log."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from controlplane.feedback.gateway import answer
from controlplane.feedback.gateway.index import PredictionIndex
from controlplane.feedback.gateway.upstream import ALLOW_NON_FINITE, model_info
from controlplane.model.signature import Signature, parse_tensor_spec

CLASSIFIER = Signature((parse_tensor_spec("pixels:float32:4"),), (parse_tensor_spec("probabilities:float32:3"),), 8)
REGRESSOR = Signature((parse_tensor_spec("x:float32:4"),), (parse_tensor_spec("y:float32:1"),), 8)


def test_first_non_finite_names_the_input_and_the_row():
    pixels = np.zeros((3, 4), dtype=np.float32)
    assert answer.first_non_finite(CLASSIFIER, {"pixels": pixels}) is None
    pixels[2, 1] = np.inf
    assert answer.first_non_finite(CLASSIFIER, {"pixels": pixels}) == "input 'pixels' row 2 holds inf"


def test_answer_is_strict_json_with_nulls_and_records_keep_nan():
    arrays = {"pixels": np.array([[np.nan, 0, 0, 0], [1, 2, 3, 4]], dtype=np.float32)}
    outputs = {"probabilities": np.array([[np.nan] * 3, [0.1, 0.7, 0.2]], dtype=np.float32)}
    body = json.loads(answer.answer_body("m", "1", CLASSIFIER, outputs, ["a", "b"], 1.0),
                      parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    first, second = body["predictions"]
    assert first["probabilities"] == [None] * 3 and first["predicted_class"] is None
    assert second["predicted_class"] == 1
    records = answer.log_records("m", "1", CLASSIFIER, arrays, outputs, ["a", "b"], 1.0, "ok")
    assert math.isnan(records[0]["features"][0]) and records[0]["predicted"] is None
    assert records[1]["predicted"] == 1 and len(records[1]["outputs"]) == 3


def test_classes_only_for_a_classifier():
    assert answer.classes_of(CLASSIFIER) == 3 and answer.classes_of(REGRESSOR) is None


def test_index_is_bounded_and_forgets_the_oldest():
    index = PredictionIndex(3)
    index.add(["a", "b"], "m", 10)
    index.add(["c", "d"], "n", None)
    assert len(index) == 3 and index.get("a") is None
    assert index.get("b") == ("m", 10) and index.get("d") == ("n", None)


def test_allow_non_finite_is_read_from_the_model_config():
    from controlplane.model import config as model_config
    from controlplane.model.config import ServingOptions

    config = model_config.build_config("m", "onnx", CLASSIFIER, ServingOptions())
    assert model_info(config).allow_non_finite is False
    config.parameters[ALLOW_NON_FINITE].string_value = "true"
    assert model_info(config).allow_non_finite is True
    assert model_info(config).signature == CLASSIFIER


def test_find_predictions_reads_issued_ids_of_every_model_from_the_log(tmp_path):
    from controlplane.feedback.predlog import PredictionLog, find_predictions
    from controlplane.store import open_store

    store = open_store(str(tmp_path / "log"))
    log = PredictionLog(store, flush_rows=10, flush_seconds=60)
    now = datetime.now(UTC)
    for model, outputs, predicted in [("digits", [0.1] * 10, 3), ("price", [2.5], None)]:
        log.predictions(model).append({"prediction_id": f"{model}-1", "time": now, "model": model, "version": "1", "features": [1.0],
                                       "outputs": outputs, "predicted": predicted, "latency_ms": 1.0, "status": "ok"})
    log.close()
    found = find_predictions(store, {"digits-1", "price-1", "ghost"})
    assert found == {"digits-1": ("digits", 10), "price-1": ("price", None)}


def test_requests_are_grouped_only_where_the_config_enables_dynamic_batching():
    from controlplane.model import config as model_config
    from controlplane.model.config import ServingOptions

    assert model_info(model_config.build_config("m", "onnx", CLASSIFIER, ServingOptions())).group_rows == 8
    assert model_info(model_config.build_config("m", "onnx", CLASSIFIER, ServingOptions(dynamic_batching=False))).group_rows == 0
    unbatched = Signature(CLASSIFIER.inputs, CLASSIFIER.outputs, 0)
    assert model_info(model_config.build_config("m", "onnx", unbatched, ServingOptions())).group_rows == 0


def test_request_metrics_count_each_request_once_in_its_latency_bucket():
    from prometheus_client.parser import text_string_to_metric_families

    from controlplane.feedback.gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics(lambda: None)
    for seconds in (0.0009, 0.001, 0.003, 5.0):
        metrics.observe("infer", "m", "1", "ok", seconds)
    metrics.observe("infer", "m", "1", "400", 0.02)
    metrics.count("feedback", "", "", "ok")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics.render()[0].decode()) for s in family.samples}
    labels = (("model", "m"), ("route", "infer"), ("version", "1"))
    assert samples[("mlctl_gateway_requests_total", (*labels[:2], ("status", "ok"), labels[2]))] == 4
    assert samples[("mlctl_gateway_requests_total", (*labels[:2], ("status", "400"), labels[2]))] == 1
    assert samples[("mlctl_gateway_requests_total", (("model", ""), ("route", "feedback"), ("status", "ok"), ("version", "")))] == 1
    bucket = {le: samples[("mlctl_gateway_request_duration_seconds_bucket", (("le", le), *labels))]
              for le in ("0.001", "0.0025", "0.005", "0.025", "2.5", "+Inf")}
    assert bucket == {"0.001": 2, "0.0025": 2, "0.005": 3, "0.025": 4, "2.5": 4, "+Inf": 5}  # a bound counts as inside
    assert samples[("mlctl_gateway_request_duration_seconds_count", labels)] == 5
    assert abs(samples[("mlctl_gateway_request_duration_seconds_sum", labels)] - 5.0249) < 1e-9
