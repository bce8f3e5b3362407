"""`--workers 2` through the real gateway: shared-nothing workers, the canary split still exact across them, and
a clean stop under load that loses no prediction-log record. (The benchmark's long form: scripts/bench/gateway.py.)"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime

import pytest
from support import call

from controlplane.release.canary import CanaryState, CanaryStore
from controlplane.store import open_store
from controlplane.triton.load import run_threads

pytestmark = pytest.mark.e2e
PREDICT = "/v1/models/classifier/predict"
ROW = {"inputs": {"pixels": [[0.25] * 64]}}


def running_canary(repo, weight: float):
    """classifier: a running canary (v2, served as classifier.canary) at `weight`; returns its state file."""
    now = datetime.now(UTC).isoformat()
    state = CanaryState(model="classifier", channel="production", stable=1, canary=2, weight=weight, steps=(weight,), step_index=0,
                        interval_s=600.0, status="running", started_at=now, step_started_at=now)
    states = CanaryStore(open_store(str(repo)))
    _, token = states.load("classifier")
    states.save(state, token)
    return repo / states.key("classifier")


def read_log(log, folder: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in sorted(log.rglob(f"{folder}/**/*.parquet")) for row in pq.ParquetFile(path).read().to_pylist()]


def load(url: str, answered: list[str], stop: threading.Event, at_most: int, clients: int = 6):
    """Predictions until `stop` or `at_most` answers; the ids of every 200 go to `answered`."""
    lock = threading.Lock()

    def make(_):
        def one() -> str:
            status, body = call(url, PREDICT, ROW)
            if status != 200:
                raise RuntimeError(f"{status}: {body}")
            with lock:
                answered.extend(p["prediction_id"] for p in body["predictions"])
                if len(answered) >= at_most:
                    stop.set()
            return body["version"]

        return one

    return run_threads(make, clients, 120, stop)


@pytest.mark.parametrize("coalesce", [(), ("--coalesce",)], ids=["alone", "coalesced"])
def test_two_workers_split_a_canary_exactly_and_a_clean_stop_under_load_loses_no_record(stage, gateway_factory, tmp_path, coalesce):
    state_file = running_canary(stage["repo"], 30.0)
    try:
        gateway = gateway_factory(repository=stage["repo"], options=("--workers", "2", "--triton-http-url", stage["triton"].http_url,
                                                                      *coalesce))
        answered: list[str] = []
        result = load(gateway.url, answered, threading.Event(), at_most=2000)
        assert result.failures == 0, result.summary()["failure_examples"]
        versions = Counter(r.version for r in result.records)
        assert sum(versions.values()) >= 2000
        assert abs(versions["2"] / sum(versions.values()) - 0.30) <= 0.02, versions
        assert len({i[:16] for i in answered}) == 2  # each worker issues ids under its own prefix: both served

        # a clean stop while the load goes on: every answered prediction is in the log, none twice
        stop, during = threading.Event(), []
        runner = threading.Thread(target=load, args=(gateway.url, during, stop, 10**9), daemon=True)
        runner.start()
        assert wait_for(lambda: len(during) >= 200), "the second load never got going"
        gateway.stop()
        stop.set()
        runner.join(timeout=60)
    finally:
        state_file.unlink()
    logged = [r for r in read_log(tmp_path / "log", "predictions") if r["status"] == "ok"]
    ids = Counter(r["prediction_id"] for r in logged)
    assert set(answered + during) <= set(ids) and max(ids.values()) == 1
    canary_share = sum(1 for r in logged if r["version"] == "2") / len(logged)
    print(f"\n2 workers at weight 30: {versions['2']} of {sum(versions.values())} answers from the canary; after a stop under "
          f"load {len(set(answered + during) - set(ids))} of {len(answered + during)} answered predictions missing from the log")
    assert abs(canary_share - 0.30) <= 0.02


def wait_for(condition, timeout_s: float = 60) -> bool:
    from controlplane.readiness import wait_until

    try:
        wait_until(condition, timeout_s, "the load")
        return True
    except TimeoutError:
        return False
