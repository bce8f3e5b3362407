"""Judging a canary against stable (pure, apart from reading the log's tables): each check is passed, breached
or NOT MADE, with its evidence.

- error rate: one-sided two-proportion z-test, and the canary at least `max_error_excess` worse;
- p99 latency: above stable's p99 x `p99_ratio` + `p99_slack_ms` is a breach;
- accuracy: from labelled predictions over the whole canary (labels arrive late and slowly); fewer than
  `min_labels` on an arm and the check is NOT MADE, never passed; unless the canary opted in
  (--estimate-missing-labels): then each arm's accuracy estimated from its logged scores decides, reported
  as estimated with its band.

A step passes when nothing is breached. Promotion after the last step needs more: every check MADE (see
`promotion_gap`), unless the user accepted an unlabelled canary when starting it.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from controlplane.quality.checks import BREACHED, NOT_MADE, PASSED
from controlplane.release.canary.state import CanaryPolicy

OK, ERRORS = {"ok", "shadow-ok"}, {"error", "shadow-error"}  # shadow-*: the canary's mirrored answers
WAIT, PASS, BREACH = "wait", "pass", "breach"
CHECKS = {"error_rate": "error rate", "p99": "p99 latency", "accuracy": "accuracy"}


def error_rate_test(stable_errors: int, stable_total: int, canary_errors: int, canary_total: int) -> float:
    """One-sided p-value that the canary's error rate is higher (two-proportion z-test, pooled)."""
    if not stable_total or not canary_total:
        return 1.0
    p1, p2 = stable_errors / stable_total, canary_errors / canary_total
    pooled = (stable_errors + canary_errors) / (stable_total + canary_total)
    se = math.sqrt(pooled * (1 - pooled) * (1 / stable_total + 1 / canary_total))
    if se == 0:
        return 1.0 if p2 <= p1 else 0.0
    z = (p2 - p1) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def _check(status: str, detail: str, **figures) -> dict:
    return {"status": status, "detail": detail, **figures}


def check_error_rate(stable: dict, canary: dict, policy: CanaryPolicy) -> dict:
    p = error_rate_test(stable["errors"], stable["requests"], canary["errors"], canary["requests"])
    s_rate, c_rate = stable["errors"] / stable["requests"], canary["errors"] / canary["requests"]
    excess = c_rate - s_rate
    if p < policy.alpha and excess > policy.max_error_excess:
        return _check(BREACHED, f"error rate {excess:+.2%} over stable (canary {c_rate:.2%}, stable {s_rate:.2%}, p={p:.2g})",
                      pvalue=p, excess=excess)
    return _check(PASSED, f"canary {c_rate:.2%} against stable {s_rate:.2%} (p={p:.2g})", pvalue=p, excess=excess)


def check_p99(stable: dict, canary: dict, policy: CanaryPolicy) -> dict:
    s99, c99 = stable["p99_ms"], canary["p99_ms"]
    missing = [name for name, value in (("canary", c99), ("stable", s99)) if value is None]
    if missing:
        return _check(NOT_MADE, f"no successful answer on {' and '.join(missing)} to take a p99 from")
    bound = s99 * policy.p99_ratio + policy.p99_slack_ms
    if c99 > bound:
        return _check(BREACHED, f"p99 {c99:.1f} ms against stable {s99:.1f} ms (bound {bound:.1f} ms)", bound_ms=bound)
    return _check(PASSED, f"p99 {c99:.1f} ms within {bound:.1f} ms (stable {s99:.1f} ms)", bound_ms=bound)


def check_accuracy(stable: dict, canary: dict, policy: CanaryPolicy) -> dict:
    """From each arm's labelled predictions (callers pass the whole canary's)."""
    counts = {"labelled_canary": canary["labelled"], "labelled_stable": stable["labelled"], "min_labels": policy.min_labels}
    if canary["labelled"] < policy.min_labels or stable["labelled"] < policy.min_labels:
        return _check(NOT_MADE, f"{canary['labelled']} of {policy.min_labels} labels on the canary, {stable['labelled']} of "
                                f"{policy.min_labels} on stable", gap="labels", **counts)
    unclassed = [name for name, arm in (("canary", canary), ("stable", stable)) if arm.get("classified", arm["labelled"]) == 0]
    if unclassed:  # labels, but no answer to compare them with: not a 0 % accuracy
        return _check(NOT_MADE, f"no predicted class in the labelled answers of {' and '.join(unclassed)} (the model answers "
                                f"neither one score vector nor one integer label per row)", gap="classes", **counts)
    s_acc, c_acc = stable["correct"] / stable["labelled"], canary["correct"] / canary["labelled"]
    drop = s_acc - c_acc
    figures = {**counts, "basis": "realised", "accuracy_canary": c_acc, "accuracy_stable": s_acc, "drop": drop}
    if drop > policy.accuracy_drop:
        return _check(BREACHED, f"accuracy {c_acc:.1%} is {drop:.1%} below stable's {s_acc:.1%} (more than "
                                f"{policy.accuracy_drop:.0%})", **figures)
    return _check(PASSED, f"accuracy {c_acc:.1%} against stable's {s_acc:.1%}", **figures)


def check_estimated_accuracy(estimates: dict | None, policy: CanaryPolicy, unlabelled: dict) -> dict:
    """For an accuracy check NOT MADE for lack of labels (`unlabelled`) on a canary that opted in: each arm's
    estimated accuracy (`estimated.arm_estimates`) decides, a breach when the canary's is more than
    `accuracy_drop` below stable's. Always reported as estimated, with both bands; NOT MADE when an arm has no
    estimate."""
    counts = {k: v for k, v in unlabelled.items() if k not in ("status", "detail", "gap")}
    missing = [f"{name}: {e['not_made']}" for name, e in (estimates or {}).items() if e.get("not_made")]
    if estimates is None or missing:
        why = "; ".join(missing) or "no estimate was computed"
        return _check(NOT_MADE, f"{unlabelled['detail']}; no estimate either ({why})", gap="labels", **counts)
    s, c = estimates["stable"], estimates["canary"]
    drop = s["accuracy"] - c["accuracy"]
    figures = {**counts, "basis": "estimated", "estimated_canary": c["accuracy"], "band_canary": c["band"],
               "estimated_stable": s["accuracy"], "band_stable": s["band"], "drop": drop, "estimates": estimates}
    said = (f"estimated accuracy {c['accuracy']:.1%} [{c['band'][0]:.1%}, {c['band'][1]:.1%}] against stable's estimated "
            f"{s['accuracy']:.1%} [{s['band'][0]:.1%}, {s['band'][1]:.1%}]")
    why = f"ESTIMATED from the logged scores ({c['rows']} canary, {s['rows']} stable answers), not realised: {unlabelled['detail']}"
    if drop > policy.accuracy_drop:
        return _check(BREACHED, f"{said} is {drop:.1%} lower (more than {policy.accuracy_drop:.0%}); {why}", **figures)
    return _check(PASSED, f"{said}; {why}", **figures)


def judge(arms: dict[str, dict], policy: CanaryPolicy, labels: dict[str, dict] | None = None,
          estimates: dict[str, dict] | None = None) -> tuple[str, dict]:
    """('pass' | 'breach' | 'wait', evidence). `arms` ({stable, canary} figures of this step: requests, errors,
    latencies_ms, labelled, correct) feed the error rate and p99; `labels` (the whole canary's; `arms` when not
    given) feed the accuracy; `estimates` (each arm's estimated accuracy) decide it when labels are short and
    the policy opted in. The evidence holds both summaries, each check and a one-line reason."""
    evidence: dict = {"stable": _summary(arms["stable"]), "canary": _summary(arms["canary"])}
    accuracy = check_accuracy((labels or arms)["stable"], (labels or arms)["canary"], policy)
    if accuracy["status"] == NOT_MADE and policy.estimate_missing_labels:
        accuracy = check_estimated_accuracy(estimates, policy, accuracy)
    short = [f"{name} {arms[name]['requests']}" for name in ("canary", "stable") if arms[name]["requests"] < policy.min_requests]
    if short:
        waiting = _check(NOT_MADE, f"fewer than {policy.min_requests} requests this step ({', '.join(short)})", gap="requests")
        checks = {"error_rate": waiting, "p99": waiting, "accuracy": accuracy}
    else:
        checks = {"error_rate": check_error_rate(arms["stable"], arms["canary"], policy),
                  "p99": check_p99(evidence["stable"], evidence["canary"], policy), "accuracy": accuracy}
    evidence["checks"] = checks
    breaches = [c["detail"] for c in checks.values() if c["status"] == BREACHED]
    evidence["reason"] = "; ".join(breaches) if breaches else describe(checks)
    return (BREACH if breaches else WAIT if short else PASS), evidence


def describe(checks: dict) -> str:
    """'error rate: passed (...); p99 latency: passed (...); accuracy: NOT MADE (...)'."""
    return "; ".join(f"{CHECKS[name]}: {c['status'].upper() if c['status'] == NOT_MADE else c['status']} ({c['detail']})"
                     for name, c in checks.items())


def promotion_gap(evidence: dict, allow_unlabelled: bool) -> str | None:
    """Why a passed last step may not promote automatically: a check NOT MADE, unless it is the accuracy and
    the user allowed an unlabelled canary. None when nothing is missing."""
    missing = [f"{CHECKS[name]} not made: {c['detail']}" for name, c in evidence["checks"].items()
               if c["status"] == NOT_MADE and not (name == "accuracy" and allow_unlabelled)]
    return "; ".join(missing) or None


def _summary(arm: dict) -> dict:
    lat = arm["latencies_ms"]
    return {"requests": arm["requests"], "errors": arm["errors"],
            "error_rate": arm["errors"] / arm["requests"] if arm["requests"] else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "labelled": arm["labelled"], "accuracy": arm["correct"] / arm["labelled"] if arm["labelled"] else None}


def arms_from_log(predictions, feedback, model: str, stable: int, canary: int, since: datetime) -> dict[str, dict]:
    """Per-arm figures from the gateway's log since `since`. The canary arm is the canary's version, whether it
    answered (ok/error) or was mirrored in shadow mode (shadow-ok/shadow-error: the same prediction id as
    stable's answer, so one label counts for both arms)."""
    from controlplane.quality.monitor import joined_all

    table = joined_all(predictions, feedback, model, since).to_pydict()
    arms = {}
    for name, version in (("stable", str(stable)), ("canary", str(canary))):
        rows = [i for i, v in enumerate(table["version"]) if v == version and table["status"][i] in OK | ERRORS]
        answered = [i for i in rows if table["status"][i] in OK]
        labelled = [i for i in answered if table["label"][i] is not None]
        arms[name] = {
            "requests": len(rows),
            "errors": len(rows) - len(answered),
            "latencies_ms": [table["latency_ms"][i] for i in answered],
            "labelled": len(labelled),
            "classified": sum(1 for i in labelled if table["predicted"][i] is not None),
            "correct": sum(1 for i in labelled if table["label"][i] == table["predicted"][i]),
        }
    return arms
