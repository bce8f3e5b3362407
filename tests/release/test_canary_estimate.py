"""A canary short of labels judged on each arm's estimated accuracy (--estimate-missing-labels), pure: the
judge, the estimate from logged scores, the state. Without the opt-in nothing changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from controlplane.quality.monitor import Reference
from controlplane.release.canary import CanaryPolicy, CanaryState, judge
from controlplane.release.canary.estimated import arm_estimate, arm_estimates
from controlplane.release.canary.judge import promotion_gap

OPTED = CanaryPolicy(estimate_missing_labels=True)


def arm(labelled=0, correct=0):
    return {"requests": 200, "errors": 0, "latencies_ms": [2.0] * 200, "labelled": labelled, "correct": correct}


def estimated(accuracy: float, rows: int = 500) -> dict:
    return {"accuracy": accuracy, "band": [accuracy - 0.02, accuracy + 0.02], "rows": rows, "not_made": None,
            "calibrated_on": "its own reference"}


ARMS = {"stable": arm(), "canary": arm()}


def test_a_canary_estimated_much_worse_is_breached_and_says_estimated_with_its_band():
    verdict, evidence = judge(ARMS, OPTED, estimates={"stable": estimated(0.95), "canary": estimated(0.70)})
    check = evidence["checks"]["accuracy"]
    assert verdict == "breach" and check["status"] == "breached" and check["basis"] == "estimated"
    assert check["detail"].startswith("estimated accuracy 70.0% [68.0%, 72.0%] against stable's estimated 95.0% [93.0%, 95.0%]"
                                      .replace("95.0%]", "97.0%]"))
    assert "ESTIMATED from the logged scores" in check["detail"] and "not realised" in check["detail"]
    assert "0 of 50 labels on the canary" in check["detail"]  # why the estimate was used
    assert check["band_canary"] == pytest.approx([0.68, 0.72]) and "accuracy_canary" not in check  # never a realised figure


def test_a_canary_estimated_as_good_passes_and_may_promote():
    verdict, evidence = judge(ARMS, OPTED, estimates={"stable": estimated(0.95), "canary": estimated(0.93)})
    assert verdict == "pass" and evidence["checks"]["accuracy"]["status"] == "passed"
    assert evidence["checks"]["accuracy"]["basis"] == "estimated" and promotion_gap(evidence, allow_unlabelled=False) is None


def test_without_the_opt_in_estimates_change_nothing():
    verdict, evidence = judge(ARMS, CanaryPolicy(), estimates={"stable": estimated(0.95), "canary": estimated(0.10)})
    assert verdict == "pass" and evidence["checks"]["accuracy"]["status"] == "not made"
    assert promotion_gap(evidence, allow_unlabelled=False).startswith("accuracy not made: 0 of 50 labels")


def test_an_estimate_that_cannot_be_made_leaves_the_check_not_made():
    gone = {"accuracy": None, "band": None, "rows": 0, "not_made": "no logged scores (outputs) to estimate from"}
    _, evidence = judge(ARMS, OPTED, estimates={"stable": estimated(0.95), "canary": gone})
    check = evidence["checks"]["accuracy"]
    assert check["status"] == "not made" and check["gap"] == "labels"
    assert "no estimate either (canary: no logged scores" in check["detail"]
    assert promotion_gap(evidence, allow_unlabelled=False) is not None
    assert judge(ARMS, OPTED)[1]["checks"]["accuracy"]["status"] == "not made"  # no estimates given at all


def test_with_enough_labels_the_realised_accuracy_decides():
    labelled = {"stable": arm(60, 57), "canary": arm(60, 56)}
    _, evidence = judge(labelled, OPTED, estimates={"stable": estimated(0.95), "canary": estimated(0.10)})
    assert evidence["checks"]["accuracy"]["status"] == "passed" and evidence["checks"]["accuracy"]["basis"] == "realised"


def reference(scores: np.ndarray, labels: np.ndarray) -> Reference:
    return Reference(features=np.zeros((len(scores), 1)), predicted=scores.argmax(1), labels=labels, accuracy=None, outputs=scores)


def test_each_arm_is_calibrated_on_its_own_reference_so_a_confidently_wrong_canary_shows():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 600)
    good = np.eye(3)[truth] * 0.8 + 0.1  # confident and right
    wrong = np.eye(3)[(truth + 1) % 3] * 0.8 + 0.1  # as confident, always wrong (isotonic maps can only say chance)
    stable_ref, canary_ref = reference(good, truth), reference(wrong, truth)
    own = arm_estimate(wrong, wrong.argmax(1), canary_ref, stable_ref, 1)
    assert own["accuracy"] < 0.4 and own["calibrated_on"] == "its own reference"  # chance: its scores say nothing
    borrowed = arm_estimate(wrong, wrong.argmax(1), None, stable_ref, 1)  # no reference of its own: stable's, said so
    assert borrowed["accuracy"] > 0.9 and borrowed["calibrated_on"].startswith("stable v1's reference (its own cannot calibrate")
    unlabelled = Reference(np.zeros((600, 1)), wrong.argmax(1), None, None, wrong)
    assert "no labels" in arm_estimate(wrong, wrong.argmax(1), unlabelled, None, 1)["not_made"]


def test_arm_estimates_read_each_versions_answered_scores_from_the_log(tmp_path):
    from controlplane.feedback.predlog import PredictionLog, read_tables
    from controlplane.store import open_store

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 400)
    scores = np.eye(2)[truth] * 0.9 + 0.05
    store, since = open_store(str(tmp_path / "log")), datetime.now(UTC) - timedelta(seconds=1)
    log = PredictionLog(store)
    for i in range(40):
        base = {"prediction_id": f"p{i}", "time": datetime.now(UTC), "model": "m", "features": [0.0], "latency_ms": 1.0}
        log.predictions("m").append({**base, "version": "1", "outputs": [0.05, 0.95], "predicted": 1, "status": "ok"})
        log.predictions("m").append({**base, "version": "2", "outputs": [0.95, 0.05], "predicted": 0, "status": "shadow-ok"})
        log.predictions("m").append({**base, "version": "2", "outputs": None, "predicted": None, "status": "shadow-error"})
    log.close()
    found = arm_estimates(read_tables(store, "m")[0], "m", 1, 2, since, {1: reference(scores, truth), 2: None})
    assert found["stable"]["rows"] == found["canary"]["rows"] == 40  # answered ones only
    assert found["stable"]["accuracy"] > 0.9 and found["canary"]["calibrated_on"].startswith("stable v1's reference")


def test_the_opt_in_is_kept_in_the_state_and_old_states_read_without_it():
    state = CanaryState.begin("m", "production", 1, 2, (10.0,), 0.0, OPTED)
    assert CanaryState.from_json(state.to_json()).policy.estimate_missing_labels is True
    old = json.loads(state.to_json())
    del old["policy"]["estimate_missing_labels"]  # a state written before the option existed
    assert CanaryState.from_json(json.dumps(old)).policy.estimate_missing_labels is False
