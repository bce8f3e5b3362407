"""`monitor report` time against the number of logged predictions (10k, 100k, 1M by default).

Writes synthetic Parquet segments the way the gateway does (64 features, half of them labelled), publishes
a version with a reference sample, then times `build_report` end to end: reading the log, the DuckDB
join, classification metrics and drift.

Usage: .venv/bin/python scripts/bench/monitor.py [--sizes 10000,100000,1000000] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from common import write_json

SEGMENT = 100_000


def write_log(store, n: int, rng: np.random.Generator) -> None:
    from controlplane.feedback.predlog import (
        FEEDBACK_SCHEMA,
        PREDICTION_SCHEMA,
        encode_segment,
    )

    start = datetime.now(timezone.utc) - timedelta(minutes=30)
    for first in range(0, n, SEGMENT):
        count = min(SEGMENT, n - first)
        features = rng.random((count, 64))
        predicted = rng.integers(0, 10, count)
        times = [start + timedelta(milliseconds=int(i)) for i in range(first, first + count)]
        ids = [f"p{i}" for i in range(first, first + count)]
        records = [{"prediction_id": ids[i], "time": times[i], "model": "digits", "version": "1", "features": features[i].tolist(),
                    "outputs": [], "predicted": int(predicted[i]), "latency_ms": 1.0, "status": "ok"} for i in range(count)]
        store.write_bytes(f"predictions/model=digits/{first:09d}.parquet", encode_segment(records, PREDICTION_SCHEMA))
        labels = [{"prediction_id": ids[i], "time": times[i] + timedelta(seconds=5), "label": int(predicted[i]) if rng.random() < 0.9 else 0}
                  for i in range(0, count, 2)]
        store.write_bytes(f"feedback/{first:09d}.parquet", encode_segment(labels, FEEDBACK_SCHEMA))


def main() -> int:
    from controlplane.feedback.predlog import read_tables
    from controlplane.quality.monitor import MonitorOptions, Reference, build_report
    from controlplane.store.local import LocalStore

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    reference = Reference(features=rng.random((2000, 64)), predicted=rng.integers(0, 10, 2000), labels=None, accuracy=0.9)
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        store = LocalStore(tempfile.mkdtemp(prefix=f"mlctl-monitor-{n}-"))
        write_log(store, n, rng)
        t0 = time.perf_counter()
        predictions, feedback = read_tables(store, "digits")
        t1 = time.perf_counter()
        report = build_report(predictions, feedback, {"1": reference}, MonitorOptions(model="digits", window_s=3600))
        t2 = time.perf_counter()
        body = report["versions"]["1"]
        row = {"predictions": n, "read_s": round(t1 - t0, 2), "report_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
               "labelled": body["labelled"], "accuracy": round(body["quality"]["accuracy"], 4)}
        results.append(row)
        print(json.dumps(row), flush=True)
    write_json(args.out, "monitor.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
