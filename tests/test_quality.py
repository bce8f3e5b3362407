"""Quality maths against scikit-learn and scipy on the same data, and drift detection on controlled shifts."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from controlplane.quality.classification import classification_report
from controlplane.quality.drift import ConceptDriftRule, feature_drift, prediction_drift, psi


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


def test_concept_drift_rule():
    rule = ConceptDriftRule(max_drop=0.05, min_labelled=50)
    assert rule.judge(0.95, 0.80, 200) == "drift"
    assert rule.judge(0.95, 0.93, 200) == "ok"
    assert rule.judge(0.95, 0.10, 20) == "insufficient labels"
