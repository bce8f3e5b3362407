"""The open-loop load: a fixed request rate whatever the answers, latency counted from the scheduled time."""

from __future__ import annotations

import time

import pytest

from controlplane.triton.load import run_open_loop


def test_open_loop_sends_at_the_rate_and_records_failures():
    def make_caller(index: int):
        count = [0]

        def call() -> str:
            count[0] += 1
            time.sleep(0.002)
            if count[0] % 5 == 0:
                raise ValueError("refused")
            return str(index)

        return call

    result = run_open_loop(make_caller, rate_per_s=200, seconds=0.5, max_in_flight=8)
    assert len(result.records) == 100
    assert 0 < result.failures < 100
    assert all(r.error == "refused" for r in result.records if r.error)
    starts = [r.start for r in result.records]
    assert starts[-1] - starts[0] == pytest.approx(0.495, abs=0.01)  # scheduled times, not when a worker was free


def test_a_saturated_target_shows_its_queue_in_the_latency():
    def make_caller(index: int):
        return lambda: time.sleep(0.02) or ""

    # 2 workers serve at most 100/s; at 200/s requests wait, and the wait counts: the 80 calls take at least
    # 80 x 20 ms / 2 = 0.8 s, so the last one, due at 0.395 s, waits at least 0.4 s (a busy host only adds to it),
    # where a latency timed from the send alone would stay near 20 ms
    result = run_open_loop(make_caller, rate_per_s=200, seconds=0.4, max_in_flight=2)
    latencies = result.latencies_s
    assert len(latencies) == 80
    assert max(latencies) >= 0.4


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        run_open_loop(lambda i: lambda: "", rate_per_s=0, seconds=1)
