"""The canary's judge and state transitions, pure: no server. A check that could not be made is NOT MADE,
never passed, and blocks automatic promotion unless the canary allows unlabelled promotion."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from controlplane import defaults
from controlplane.errors import NotFoundError, UsageError
from controlplane.release.canary import CanaryPolicy, CanaryState, judge
from controlplane.release.canary.judge import arms_from_log, promotion_gap
from controlplane.release.canary.manager import still_running
from controlplane.release.canary.state import decision


def arm(requests=200, errors=0, latency_ms=2.0, labelled=0, correct=0):
    return {"requests": requests, "errors": errors, "latencies_ms": [latency_ms] * (requests - errors), "labelled": labelled,
            "correct": correct}


def statuses(evidence: dict) -> dict:
    return {name: check["status"] for name, check in evidence["checks"].items()}


def test_policy_defaults_come_from_the_named_thresholds():
    policy = CanaryPolicy()
    assert (policy.min_requests, policy.alpha, policy.min_labels, policy.accuracy_drop, policy.p99_ratio) == (
        defaults.CANARY_MIN_REQUESTS, defaults.CANARY_ALPHA, defaults.MIN_LABELS, defaults.ACCURACY_DROP, defaults.CANARY_P99_RATIO)


def test_without_labels_the_accuracy_check_is_not_made_and_blocks_promotion():
    verdict, evidence = judge({"stable": arm(), "canary": arm()}, CanaryPolicy())
    assert verdict == "pass"  # the step itself: nothing breached
    assert statuses(evidence) == {"error_rate": "passed", "p99": "passed", "accuracy": "not made"}
    assert "every check within bounds" not in evidence["reason"]
    assert "accuracy: NOT MADE (0 of 50 labels on the canary, 0 of 50 on stable)" in evidence["reason"]
    gap = promotion_gap(evidence, allow_unlabelled=False)
    assert gap == "accuracy not made: 0 of 50 labels on the canary, 0 of 50 on stable"
    assert promotion_gap(evidence, allow_unlabelled=True) is None  # the user's explicit opt-out


def test_labels_are_counted_over_the_whole_canary_not_the_step():
    step = {"stable": arm(labelled=10, correct=10), "canary": arm(labelled=10, correct=10)}
    whole = {"stable": arm(400, labelled=60, correct=57), "canary": arm(400, labelled=55, correct=52)}
    assert statuses(judge(step, CanaryPolicy())[1])["accuracy"] == "not made"
    verdict, evidence = judge(step, CanaryPolicy(), labels=whole)
    assert verdict == "pass" and statuses(evidence)["accuracy"] == "passed"
    assert evidence["checks"]["accuracy"]["labelled_canary"] == 55 and promotion_gap(evidence, False) is None


def test_an_accuracy_breach_is_a_breach_even_while_waiting_for_requests():
    worse = {"stable": arm(400, labelled=60, correct=57), "canary": arm(400, labelled=60, correct=20)}
    verdict, evidence = judge({"stable": arm(10), "canary": arm(10)}, CanaryPolicy(), labels=worse)
    assert verdict == "breach" and statuses(evidence)["accuracy"] == "breached"
    assert evidence["reason"].startswith("accuracy 33.3% is 61.7% below stable's 95.0%")


def test_waiting_for_requests_reports_the_checks_as_not_made():
    verdict, evidence = judge({"stable": arm(500), "canary": arm(10)}, CanaryPolicy(min_requests=50))
    assert verdict == "wait"
    assert statuses(evidence) == {"error_rate": "not made", "p99": "not made", "accuracy": "not made"}
    assert "fewer than 50 requests this step (canary 10)" in evidence["reason"]
    assert "requests" in promotion_gap(evidence, allow_unlabelled=True)  # only the accuracy may be opted out


def test_a_canary_that_never_answers_has_no_p99_and_breaches_on_errors():
    verdict, evidence = judge({"stable": arm(), "canary": arm(200, 200)}, CanaryPolicy())
    assert verdict == "breach" and statuses(evidence)["p99"] == "not made" and statuses(evidence)["error_rate"] == "breached"
    assert "no successful answer on canary" in evidence["checks"]["p99"]["detail"]


def test_shadow_answers_count_for_labels(tmp_path):
    """A shadow record carries the id of stable's answer and the canary's class: one label judges both arms."""
    from controlplane.feedback.predlog import PredictionLog, read_tables
    from controlplane.store import open_store

    store = open_store(str(tmp_path / "log"))
    since = datetime.now(UTC) - timedelta(seconds=1)
    log = PredictionLog(store)
    for i in range(6):
        base = {"prediction_id": f"p{i}", "time": datetime.now(UTC), "model": "m", "features": [0.0], "outputs": [0.1, 0.9],
                "latency_ms": 1.0}
        log.predictions("m").append({**base, "version": "1", "predicted": 1, "status": "ok"})
        log.predictions("m").append({**base, "version": "2", "predicted": i % 2, "status": "shadow-ok"})
        log.feedback.append({"prediction_id": f"p{i}", "time": datetime.now(UTC), "label": 1})
    log.close()
    arms = arms_from_log(*read_tables(store, "m"), "m", 1, 2, since)
    assert (arms["stable"]["requests"], arms["stable"]["labelled"], arms["stable"]["correct"]) == (6, 6, 6)
    assert (arms["canary"]["requests"], arms["canary"]["labelled"], arms["canary"]["correct"]) == (6, 6, 3)


def test_labels_on_answers_without_a_class_leave_the_accuracy_not_made():
    """A model answering neither one score vector nor one integer label: its labelled answers are not 0 % right."""
    unclassed = {"stable": {**arm(400, labelled=60), "classified": 0}, "canary": {**arm(400, labelled=60), "classified": 0}}
    verdict, evidence = judge(unclassed, CanaryPolicy())
    accuracy = evidence["checks"]["accuracy"]
    assert verdict == "pass" and accuracy["status"] == "not made" and accuracy["gap"] == "classes"
    assert "no predicted class in the labelled answers of canary and stable" in accuracy["detail"]
    assert promotion_gap(evidence, allow_unlabelled=False).startswith("accuracy not made: no predicted class")


def test_state_transitions_and_document_round_trip():
    state = CanaryState.begin("m", "production", 1, 2, (10.0, 50.0), 60.0, CanaryPolicy(min_labels=5), shadow=True)
    assert state.running and state.automatic and not state.at_last_step and not state.allow_unlabelled
    nxt = state.advanced("2026-01-01T00:00:00+00:00")
    assert (nxt.weight, nxt.step_index, nxt.step_started_at, nxt.at_last_step) == (50.0, 1, "2026-01-01T00:00:00+00:00", True)
    with pytest.raises(UsageError, match="last step"):
        nxt.advanced()
    held = nxt.decided(decision(nxt, "canary-hold", "held", "accuracy not made"))
    assert held.holding and held.running
    ended = held.ended("aborted")
    assert (ended.weight, ended.status, ended.holding) == (0.0, "aborted", False)
    with pytest.raises(NotFoundError, match="no running canary"):
        ended.ended("promoted")
    assert CanaryState.from_json(held.to_json()) == held
    old = json.loads(state.to_json())
    del old["allow_unlabelled"]  # a state written before the flag existed
    assert CanaryState.from_json(json.dumps(old)).allow_unlabelled is False
    with pytest.raises(UsageError, match="already the stable version"):
        CanaryState.begin("m", "production", 2, 2, (10.0,), 0.0, CanaryPolicy())
    assert not CanaryState.begin("m", "production", 1, 2, (10.0,), 0.0, CanaryPolicy()).automatic


def test_the_error_when_time_runs_out_says_what_is_missing():
    state = CanaryState.begin("m", "production", 1, 4, (30.0,), 1.0, CanaryPolicy())
    held = state.decided(decision(state, "canary-hold", "held", "x"))
    error = still_running(held, "accuracy not made: 0 of 50 labels on the canary, 0 of 50 on stable", 7)
    assert error.exit_code == 6
    assert "passed its last step but was not promoted: accuracy not made: 0 of 50 labels" in str(error)
    assert "--allow-unlabelled" in str(error) and "mlctl canary promote m" in str(error)
    waiting = still_running(state, "fewer than 100 requests this step (canary 3)", 7)
    assert "not decided within 7 s: fewer than 100 requests" in str(waiting)
