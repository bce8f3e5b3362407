"""`monitor report` time against the number of logged predictions (10k, 100k, 1M by default).

Writes synthetic Parquet segments the way the gateway does (64 features, half of them labelled), publishes
a version with a reference sample, then times the full report end to end: reading the log, the DuckDB
join, classification metrics, the estimate (CBPE), data quality, per-feature, multivariate and output drift,
slices, and rendering the HTML page. Each row carries the host's load average: on a shared machine it
explains the spread.

Usage: .venv/bin/python scripts/bench/monitor.py [--sizes 10000,100000,1000000] [--out bench-out] [--runs 3]
       [--screenshot docs/monitor-report.png]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
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

    start = datetime.now(UTC) - timedelta(minutes=30)
    for first in range(0, n, SEGMENT):
        count = min(SEGMENT, n - first)
        features = rng.random((count, 64))
        outputs = rng.dirichlet(np.full(10, 0.3), count)  # scores, so the estimate (CBPE) runs too
        predicted = outputs.argmax(1)
        times = [start + timedelta(milliseconds=int(i)) for i in range(first, first + count)]
        ids = [f"p{i}" for i in range(first, first + count)]
        records = [{"prediction_id": ids[i], "time": times[i], "model": "digits", "version": "1", "features": features[i].tolist(),
                    "outputs": outputs[i].tolist(), "predicted": int(predicted[i]), "latency_ms": 1.0, "status": "ok"} for i in range(count)]
        store.write_bytes(f"predictions/model=digits/{first:09d}.parquet", encode_segment(records, PREDICTION_SCHEMA))
        labels = [{"prediction_id": ids[i], "time": times[i] + timedelta(seconds=5), "label": int(predicted[i]) if rng.random() < 0.9 else 0}
                  for i in range(0, count, 2)]
        store.write_bytes(f"feedback/{first:09d}.parquet", encode_segment(labels, FEEDBACK_SCHEMA))


def save_screenshot(page: str, path: Path) -> None:
    """The report as a person sees it, in a real headless Chromium (tests/helpers/browser.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "helpers"))
    from browser import chromium, screenshot

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "report.html"
        html.write_text(page)
        with chromium() as driver:
            driver.get(html.as_uri())
            screenshot(driver, path)


def main() -> int:
    from controlplane.feedback.predlog import read_tables
    from controlplane.quality.html import render
    from controlplane.quality.monitor import MonitorOptions, Reference, build_report
    from controlplane.store.local import LocalStore

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--runs", type=int, default=3, help="report runs per size (the spread of three by default)")
    parser.add_argument("--screenshot", type=Path, default=None, help="save the last report's page as a PNG (e.g. docs/monitor-report.png)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ref_outputs = rng.dirichlet(np.full(10, 0.3), 2000)
    ref_predicted = ref_outputs.argmax(1)
    reference = Reference(features=rng.random((2000, 64)), predicted=ref_predicted, accuracy=0.9, outputs=ref_outputs,
                          labels=np.where(rng.random(2000) < 0.9, ref_predicted, 0))
    results = []
    for n in [int(s) for s in args.sizes.split(",")]:
        store = LocalStore(tempfile.mkdtemp(prefix=f"mlctl-monitor-{n}-"))
        write_log(store, n, rng)
        for run in range(args.runs):
            t0 = time.perf_counter()
            predictions, feedback = read_tables(store, "digits", outputs_by_name=False)  # as `monitor report` reads it
            t1 = time.perf_counter()
            report = build_report(predictions, feedback, {"1": reference}, MonitorOptions(model="digits", window_s=3600, segment_feature="f0"))
            t2 = time.perf_counter()
            page = render(report)
            t3 = time.perf_counter()
            body = report["versions"]["1"]
            row = {"predictions": n, "run": run + 1, "read_s": round(t1 - t0, 2), "report_s": round(t2 - t1, 2), "html_s": round(t3 - t2, 2),
                   "total_s": round(t3 - t0, 2), "labelled": body["labelled"], "accuracy": round(body["quality"]["accuracy"], 4),
                   "estimated_accuracy": round(body["estimated"]["accuracy"], 4),
                   "load_1m": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}  # a busy host reads slower
            results.append(row)
            print(json.dumps(row), flush=True)
        if args.screenshot:
            save_screenshot(page, args.screenshot)
    write_json(args.out, "monitor.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
