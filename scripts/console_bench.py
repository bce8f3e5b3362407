"""How fast `mlctl console` renders a model page with 10 versions, 2 channels and 3 real Triton replicas (the issue's
bound: 300 ms), how long it takes with one replica hung (kill -STOP), and, with --screenshots DIR, the main pages
through a real headless Chromium.

    .venv/bin/python scripts/console_bench.py [--runs 3] [--requests 20] [--screenshots docs/console]

Each run fetches the page --requests times (after one warm-up) and reports median, p90 and max in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS_HELPERS = Path(__file__).resolve().parent.parent / "tests" / "helpers"
sys.path.insert(0, str(TESTS_HELPERS))

from console_fleet import (
    ADMIN_KEY,
    MODEL,
    build_fleet,
    get,
    start_console,
    stop_console,
)
from support import MLP_INPUTS, TESTS

from controlplane.export.exporter import ExportRequest, export_model


def timed(url: str, n: int) -> dict:
    get(url)
    seconds = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _ = get(url)
        seconds.append(time.perf_counter() - t0)
        if status != 200:
            raise SystemExit(f"{url} answered {status}")
    seconds.sort()
    return {"median_ms": round(1000 * statistics.median(seconds), 1), "p90_ms": round(1000 * seconds[int(0.9 * (n - 1))], 1),
            "max_ms": round(1000 * seconds[-1], 1)}


def screenshots(console: str, out: Path, fleet) -> list[str]:
    from browser import chromium, screenshot
    from selenium.webdriver.support.ui import WebDriverWait

    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with chromium(width=1400, height=900) as driver:
        for name, path in (("models", "/"), ("model", f"/models/{MODEL}"), ("diff", f"/models/{MODEL}/diff?a=9&b=10")):
            driver.get(console + path)
            if name == "model":
                WebDriverWait(driver, 30).until(lambda d: all(e.get_attribute("data-loaded") for e in d.find_elements("css selector", "[data-panel]")))
            saved.append(str(screenshot(driver, out / f"console-{name}.png")))
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--screenshots", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mlctl-console-"))
    sys.path.insert(0, str(TESTS))
    bundle = export_model(ExportRequest("models_under_test:mlp", MLP_INPUTS, work / "export", ("y",), formats=("onnx",)))
    fleet = build_fleet(work, bundle, versions=10)
    proc = None
    try:
        lc = fleet.lifecycle()
        lc.promote(MODEL, 8, "production", "run 8 beats run 10 on the holdout")
        lc.rollback(MODEL, "production", reason="run 8 misclassifies class 3 in production")
        proc, console = start_console(fleet.repo.uri, fleet.targets_file, env={"MLCTL_CONSOLE_ADMIN_KEYS": ADMIN_KEY})
        page = f"{console}/models/{MODEL}"
        result = {"page": page, "versions": 10, "channels": 2, "replicas": 3,
                  "runs": [timed(page, args.requests) for _ in range(args.runs)], "models_page": timed(console + "/", args.requests)}
        hung = fleet.states["production"][-1]
        os.kill(hung.pid, signal.SIGSTOP)
        try:
            result["one_replica_hung"] = timed(page, 5)
        finally:
            os.kill(hung.pid, signal.SIGCONT)
        if args.screenshots:
            result["screenshots"] = screenshots(console, args.screenshots, fleet)
        print(json.dumps(result, indent=2))
    finally:
        if proc is not None:
            stop_console(proc)
        fleet.stop()


if __name__ == "__main__":
    main()
