"""Quality maths against scikit-learn and scipy on the same data, and drift detection on controlled shifts."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from controlplane.quality.classification import classification_report
from controlplane.quality.drift import (
    ConceptDriftRule,
    feature_drift,
    prediction_drift,
    psi,
)
from controlplane.quality.reference import ReferenceSample


def test_per_class_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 5, 500))
    y_pred[y_pred == 4] = 3  # class 4 is never predicted: precision has no denominator
    report = classification_report(y_true, y_pred, labels=range(5))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    assert report.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    np.testing.assert_allclose([c.precision for c in report.classes], precision)
    np.testing.assert_allclose([c.recall for c in report.classes], recall)
    np.testing.assert_allclose([c.f1 for c in report.classes], f1)
    assert [c.support for c in report.classes] == list(support)
    assert np.array_equal(np.array(report.confusion), confusion_matrix(y_true, y_pred, labels=range(5)))


def test_psi_is_small_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=5000)
    assert psi(reference, rng.normal(size=5000)) < 0.02
    assert psi(reference, rng.normal(loc=1.0, size=5000)) > 0.2
    assert psi(np.zeros(100), np.zeros(50)) == pytest.approx(0.0, abs=1e-6)


def test_feature_drift_flags_only_the_shifted_feature():
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(3000, 3))
    current = rng.normal(size=(3000, 3))
    current[:, 1] += 0.8
    flags = {f.feature: f.drifted for f in feature_drift(["a", "b", "c"], reference, current)}
    assert flags == {"a": False, "b": True, "c": False}


def test_prediction_drift_chi_square():
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 4, 4000)
    same = prediction_drift(reference, rng.integers(0, 4, 2000), [0, 1, 2, 3])
    assert not same.drifted
    skewed = np.concatenate([rng.integers(0, 4, 1500), np.zeros(500, dtype=int)])
    assert prediction_drift(reference, skewed, [0, 1, 2, 3]).drifted


def test_prediction_drift_counts_the_reference_as_a_sample():
    """Two samples of one class distribution: a window ten times the reference is no drift (a test that took
    the reference's shares as exact flagged 99 % of such pairs)."""
    rng = np.random.default_rng(4)
    flags = [prediction_drift(rng.integers(0, 10, 2000), rng.integers(0, 10, 20000), list(range(10))).drifted for _ in range(20)]
    assert sum(flags) <= 1
    assert prediction_drift(rng.integers(0, 10, 2000), rng.integers(0, 9, 20000), list(range(10))).drifted  # a class gone


def test_concept_drift_rule():
    rule = ConceptDriftRule(max_drop=0.05, min_labelled=50)
    assert rule.judge(0.95, 0.80, 200) == "drift"
    assert rule.judge(0.95, 0.93, 200) == "ok"
    assert rule.judge(0.95, 0.10, 20) == "insufficient labels"


def test_monitor_export_gauges_match_the_report(tmp_path, exports):
    """A synthetic log with known labels: the gauges say what the report says, and the accuracy is exact."""
    from datetime import datetime, timezone

    from prometheus_client.parser import text_string_to_metric_families
    from support import run_mlctl

    from controlplane.feedback.predlog import PredictionLog
    from controlplane.model.config import ServingOptions
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    rng = np.random.default_rng(5)
    (tmp_path / "repo").mkdir()
    reference = tmp_path / "ref.npz"
    np.savez(reference, features=rng.normal(size=(300, 8)), predicted=rng.integers(0, 4, 300), labels=rng.integers(0, 4, 300))
    Repository(open_store(str(tmp_path / "repo"))).publish(exports["mlp"], "synthetic", "onnx", ServingOptions(), {}, ReferenceSample.read(reference))
    log = PredictionLog(open_store(str(tmp_path / "log")), flush_rows=64)
    now = datetime.now(timezone.utc)
    for i in range(200):
        predicted = int(rng.integers(0, 4))
        log.predictions("synthetic").append({"prediction_id": f"p{i}", "time": now, "model": "synthetic", "version": "1",
                                             "features": rng.normal(size=8).tolist(), "outputs": [0.0] * 4, "predicted": predicted,
                                             "latency_ms": 1.0, "status": "ok"})
        log.feedback.append({"prediction_id": f"p{i}", "time": now, "label": predicted if i < 150 else (predicted + 1) % 4})
    log.close()
    env = {"MLCTL_REPOSITORY": str(tmp_path / "repo"), "MLCTL_PREDICTION_LOG": str(tmp_path / "log")}
    result = run_mlctl("monitor", "export", "synthetic", "--once", env=env)
    assert result.returncode == 0, result.stderr
    gauges = {(s.name, s.labels.get("class")): s.value for f in text_string_to_metric_families(result.stdout) for s in f.samples}
    assert gauges[("mlctl_quality_accuracy", None)] == pytest.approx(0.75)
    assert gauges[("mlctl_quality_feedback_coverage", None)] == 1.0
    assert gauges[("mlctl_quality_predictions", None)] == 200
    assert gauges[("mlctl_drift_features_drifted", None)] == 0
    report = __import__("json").loads(run_mlctl("monitor", "report", "synthetic", "--json", env=env).stdout)["versions"]["1"]
    for c in report["quality"]["classes"]:
        assert gauges[("mlctl_quality_class_f1", str(c["label"]))] == pytest.approx(c["f1"])


def test_prediction_log_and_report_on_s3(s3_env, exports):
    """Segments written to a real S3-compatible server, joined back by DuckDB, reported by the CLI."""
    import json
    from datetime import datetime, timezone

    from support import new_s3_uri, run_mlctl

    from controlplane.feedback.predlog import PredictionLog, read_tables
    from controlplane.store import open_store

    uri = new_s3_uri() + "/log"
    log = PredictionLog(open_store(uri), flush_rows=10)
    now = datetime.now(timezone.utc)
    for i in range(30):
        log.predictions("m").append({"prediction_id": f"s3-{i}", "time": now, "model": "m", "version": "1", "features": [float(i)],
                                     "outputs": [], "predicted": i % 3, "latency_ms": 1.0, "status": "ok"})
        if i % 2 == 0:
            log.feedback.append({"prediction_id": f"s3-{i}", "time": now, "label": i % 3})
    log.close()
    predictions, feedback = read_tables(open_store(uri), "m")
    assert (predictions.num_rows, feedback.num_rows) == (30, 15)
    assert len(open_store(uri).list_files("predictions/model=m")) == 3  # flushed by size: 10 records a segment
    from controlplane.model.config import ServingOptions
    from controlplane.store.repository import Repository

    repo = Repository(open_store(new_s3_uri()))
    repo.publish(exports["mlp"], "m", "onnx", ServingOptions())
    result = run_mlctl("-r", repo.uri, "monitor", "report", "m", "--log", uri, "--window", "10m", "--json")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)["versions"]["1"]
    assert (body["predictions"], body["labelled"], body["quality"]["accuracy"]) == (30, 15, 1.0)
    ghost = run_mlctl("-r", repo.uri, "monitor", "report", "ghost", "--log", uri)
    assert ghost.returncode == 3 and "model 'ghost' not found" in ghost.stderr


def test_canary_routing_and_judging():
    from controlplane.errors import UsageError
    from controlplane.release.canary import (
        CanaryPolicy,
        Router,
        error_rate_test,
        judge,
        parse_steps,
    )

    router = Router()
    assert sum(router.to_canary("m", 30) for _ in range(1000)) == 300  # exact, not just on average
    assert {router.to_canary("m", 30, sticky_key="client-7") for _ in range(20)} in ({True}, {False})
    assert not router.to_canary("m", 0) and router.to_canary("m", 100)
    assert error_rate_test(5, 1000, 5, 1000) > 0.4
    assert error_rate_test(5, 1000, 60, 1000) < 1e-6
    with pytest.raises(UsageError):
        parse_steps("50,10", 10)

    def arm(requests, errors, latency_ms=2.0):
        return {"requests": requests, "errors": errors, "latencies_ms": [latency_ms] * (requests - errors), "labelled": 0, "correct": 0}

    policy = CanaryPolicy(min_requests=50)
    assert judge({"stable": arm(500, 1), "canary": arm(10, 0)}, policy)[0] == "wait"
    assert judge({"stable": arm(500, 1), "canary": arm(200, 0)}, policy)[0] == "pass"
    verdict, evidence = judge({"stable": arm(500, 1), "canary": arm(200, 40)}, policy)
    assert verdict == "breach" and "error rate" in evidence["reason"]
    verdict, evidence = judge({"stable": arm(500, 0, 2.0), "canary": arm(200, 0, 40.0)}, policy)
    assert verdict == "breach" and "p99" in evidence["reason"]
