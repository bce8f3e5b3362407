"""The one load generator: bounded, every request recorded, failures are data."""

from __future__ import annotations

import asyncio
import threading
import time

from controlplane.triton.load import run_async, run_threads


def test_threads_record_answers_and_failures_within_the_bound():
    calls = {"n": 0}
    lock = threading.Lock()

    def make_caller(index: int):
        def call() -> str:
            with lock:
                calls["n"] += 1
                n = calls["n"]
            time.sleep(0.001)
            if n % 10 == 0:
                raise ValueError(f"request {n} refused")
            return str(index)

        return call

    started = time.monotonic()
    result = run_threads(make_caller, 4, 0.3)
    assert time.monotonic() - started < 5
    assert len(result.records) == calls["n"] > 20
    assert result.failures == calls["n"] // 10
    assert {r.version for r in result.records if not r.error} == {"0", "1", "2", "3"}
    assert all("refused" in r.error for r in result.records if r.error)
    summary = result.summary()
    assert summary["requests"] == len(result.records) and summary["failures"] == result.failures
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]


def test_threads_stop_early_on_the_event():
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    run_threads(lambda _i: lambda: time.sleep(0.01) or "1", 2, 30, stop=stop)
    assert time.monotonic() - started < 5


def test_async_workers():
    async def main():
        async def call() -> str:
            await asyncio.sleep(0.001)
            return "7"

        return await run_async(lambda _i: call, 8, 0.2)

    result = asyncio.run(main())
    assert result.failures == 0 and len(result.records) > 50
    assert result.requests_per_s > 0 and {r.client for r in result.records} == set(range(8))
