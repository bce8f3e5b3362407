"""Per-key limits and the security counters, through the real gateway (`mlctl gateway serve`) in front of the
session's Triton: the rate holds across two workers, refusals are answered 429/413/401/403 and each is counted."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from support import ADMIN_KEY, PREDICT_KEY, call, run_mlctl, start_gateway

from controlplane.errors import UsageError
from controlplane.feedback.gateway.ratelimit import (
    KeyLimit,
    Limiter,
    key_id,
    parse_limits,
    take,
)
from controlplane.security import events
from controlplane.store import open_store

PREDICT = "/v1/models/mlp/predict"
ROW = {"inputs": {"x": [[0.0] * 8]}}
RATE = 20.0  # requests per second for the predict key
WINDOW_S = 10.0
BODY_CAP = 2048  # the predict key's largest body
SLOW_RATE = 2.0  # for counting refusals: a rate one client passes even on a busy machine


# --- pure parts ---------------------------------------------------------------------------------
def test_parse_limits_reads_every_key_and_names_no_key_in_errors():
    assert parse_limits("*:50, k1:5:4096 ,k2:-:100") == {"*": KeyLimit(50.0, None), "k1": KeyLimit(5.0, 4096), "k2": KeyLimit(None, 100)}
    for bad in ("secret:fast", "secret:-5", "secret:5:0", "secret:5:big"):
        with pytest.raises(UsageError) as error:
            parse_limits(bad)
        assert "secret" not in str(error.value) and key_id("secret") in str(error.value)


def test_a_bucket_admits_its_burst_then_its_rate():
    tokens, last, now, admitted = 0.0, 0.0, 100.0, 0
    for _ in range(1000):  # 10 s of one request every 10 ms, at 20/s with a burst of 20
        tokens, last, wait = take(tokens, last, now, 20.0, 20.0)
        admitted += wait == 0.0
        now += 0.01
    assert admitted == 20 + 200 - 1  # the burst, then one per 50 ms (the last refill lands after the window)
    _, _, wait = take(0.0, now, now, 20.0, 20.0)
    assert wait == pytest.approx(0.05)


def test_limits_for_unknown_keys_are_bad_input():
    with pytest.raises(UsageError, match="neither predict nor admin"):
        Limiter(frozenset({"a"}), {"b": KeyLimit(1.0, None)}, 1000)


# --- through the real gateway -----------------------------------------------------------------------
def scrape(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        return response.read().decode()


def counter(text: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}_total\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_the_rate_holds_within_ten_percent_across_two_workers(triton, tmp_path):
    proc, url = start_gateway(triton, tmp_path / "log", "--workers", "2", "--key-limits", f"{PREDICT_KEY}:{RATE:g}")
    statuses: list[int] = []
    lock, stop = threading.Lock(), threading.Event()

    def client():
        while not stop.is_set():
            status, _ = call(url, PREDICT, ROW)  # a new connection per request: the kernel spreads them over the workers
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=client) for _ in range(4)]
    try:
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(WINDOW_S)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    admitted, limited = statuses.count(200), statuses.count(429)
    assert admitted + limited == len(statuses), f"other statuses: {set(statuses)}"
    assert limited > admitted, "the clients never pressed on the limit: the test shows nothing"
    expected = RATE * elapsed + RATE  # the rate over the window, plus the full bucket at the start
    assert abs(admitted - expected) <= 0.1 * expected, f"{admitted} admitted in {elapsed:.1f} s, expected {expected:.0f}"


def test_security_counters_move_by_exactly_the_refusals_sent(triton, tmp_path):
    repository = open_store(str(tmp_path / "repo"))  # security events recorded where they happened (a refused promote)
    for reason in ("untrusted_key", "untrusted_key", "unsigned"):
        events.record(repository, events.SIGNATURE_REFUSED, reason, model="m", version=1, action="promote")
    events.record(repository, events.TAMPERING_DETECTED, "files_changed", model="m", version=2, action="load")
    proc, url = start_gateway(triton, tmp_path / "log", "--key-limits", f"{PREDICT_KEY}:{SLOW_RATE:g}:{BODY_CAP}",
                              env={"MLCTL_REPOSITORY": repository.uri})
    try:
        before = scrape(url)
        sent = {"missing_key": 3, "unknown_key": 2, "feedback": 4, "oversized": 2}
        for _ in range(sent["missing_key"]):
            assert call(url, PREDICT, ROW, key=None)[0] == 401
        for _ in range(sent["unknown_key"]):
            assert call(url, PREDICT, ROW, key="not-a-key")[0] == 403
        for _ in range(sent["feedback"]):  # a control call with a predict key
            assert call(url, "/v1/feedback", {"prediction_id": "x", "label": 1})[0] == 403
        big = {"inputs": {"x": [[0.123456789] * 8] * 40}}
        for _ in range(sent["oversized"]):
            assert call(url, PREDICT, big)[0] == 413
        assert call(url, PREDICT, big, key=ADMIN_KEY)[0] != 413  # the cap is the predict key's, not the admin's
        limited = 0
        for _ in range(int(SLOW_RATE) * 5):  # faster than the rate: some are refused, each with Retry-After
            request = urllib.request.Request(url + PREDICT, data=b'{"inputs": {"x": [[0,0,0,0,0,0,0,0]]}}',
                                             headers={"X-API-Key": PREDICT_KEY, "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                assert exc.code == 429 and int(exc.headers["Retry-After"]) >= 1
                exc.close()
                limited += 1
        assert limited > 0
        after = scrape(url)
        shown = run_mlctl("metrics", "security", "--source", "direct", "--gateway-url", url + "/metrics", "--json")
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    def moved(name: str, **labels: str) -> float:
        return counter(after, name, **labels) - counter(before, name, **labels)

    assert moved("mlctl_security_auth_failures", reason="missing_key") == sent["missing_key"]
    assert moved("mlctl_security_auth_failures", reason="unknown_key") == sent["unknown_key"]
    assert moved("mlctl_security_auth_failures", reason="wrong_scope") == sent["feedback"]
    assert moved("mlctl_security_refused_control_calls", route="/v1/feedback") == sent["feedback"]
    assert moved("mlctl_security_oversized_requests", key=key_id(PREDICT_KEY)) == sent["oversized"]
    assert moved("mlctl_security_rate_limited", key=key_id(PREDICT_KEY)) == limited
    assert PREDICT_KEY not in after and ADMIN_KEY not in after  # ids, never the keys
    assert counter(after, "mlctl_security_events", kind="signature_refused", reason="untrusted_key") == 2
    assert counter(after, "mlctl_security_events", kind="signature_refused") == 3
    assert counter(after, "mlctl_security_events", kind="tampering_detected", reason="files_changed") == 1
    assert shown.returncode == 0, shown.stderr
    figures = json.loads(shown.stdout)["figures"]  # `mlctl metrics security` shows the same counts
    assert figures["auth_failures"] == {r: counter(after, "mlctl_security_auth_failures", reason=r)
                                        for r in ("missing_key", "unknown_key", "wrong_scope")}
    assert figures["rate_limited"] == {key_id(PREDICT_KEY): counter(after, "mlctl_security_rate_limited")}
    assert figures["signature_refused"] == {"untrusted_key": 2, "unsigned": 1}
    assert figures["tampering_detected"] == {"files_changed": 1}
