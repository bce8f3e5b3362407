"""Control-plane speed, in one run: publish time against model size (local disk and S3), promote and
rollback time-to-serve per replica, and the wall time of `mlctl --help` and `mlctl status`.

Usage: .venv/bin/python scripts/bench/control_plane.py [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: local_servers.py
from common import write_json  # noqa: E402
from local_servers import start_s3, stop, triton_options  # noqa: E402

MLCTL = str(Path(sys.executable).parent / "mlctl")


def fake_bundle(work: Path, template: Path, size_mb: int) -> Path:
    """An export whose model file has the given size (publish copies and hashes bytes; it never parses them)."""
    path = work / f"bundle-{size_mb}mb"
    path.mkdir()
    (path / "export.json").write_text((template / "export.json").read_text().replace('"torchscript"', '"onnx"'))
    (path / "model.onnx").write_bytes(os.urandom(size_mb << 20))
    return path


def timed_cli(args: list[str], env: dict, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([MLCTL, *args], env=env, capture_output=True, check=False)
        times.append(round(time.perf_counter() - t0, 3))
    return times


def main() -> int:
    from controlplane.demo import digits as demo
    from controlplane.model.bundle import ExportBundle
    from controlplane.model.config import ServingOptions
    from controlplane.release.lifecycle import Lifecycle
    from controlplane.store import open_store
    from controlplane.store.repository import Repository
    from controlplane.triton.server.local import LocalServers
    from controlplane.triton.targets import Targets

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlctl-cp-"))
    results: dict = {"machine": f"{os.cpu_count()} cpus"}

    moto, _ = start_s3("bench")
    try:
        (work / "local").mkdir()
        local_repo = Repository(open_store(str(work / "local")))
        v1, v2 = demo.publish_demo_versions(local_repo, "digits", (0, 1), work / "exports")
        template = work / "exports" / "digits-seed0"
        publish = []
        for size in (1, 16, 64):
            bundle = ExportBundle.load(fake_bundle(work, template, size))
            for kind, uri in (("local", str(work / "local")), ("s3", "s3://bench/repo")):
                repo = Repository(open_store(uri))
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    repo.publish(bundle, f"size{size}", "onnx", ServingOptions())
                    times.append(time.perf_counter() - t0)
                publish.append({"size_mb": size, "store": kind, "seconds_median": round(statistics.median(times), 3),
                                "mb_per_s": round(size / statistics.median(times), 1)})
                print(json.dumps(publish[-1]), flush=True)
        results["publish"] = publish

        servers = LocalServers(work / "home")
        states = [servers.start(triton_options(local_repo.uri, f"cp{i}", channel="production")) for i in range(2)]
        try:
            lifecycle = Lifecycle(local_repo, Targets({"production": tuple(s.grpc_url for s in states)}))
            lifecycle.promote("digits", v1, "production")
            per_replica = []
            for _ in range(3):
                for report in (lifecycle.promote("digits", v2, "production"), lifecycle.rollback("digits", "production")):
                    per_replica += [r["seconds"] for r in report.replicas]
            results["switch_seconds_per_replica"] = {"median": statistics.median(per_replica), "max": max(per_replica),
                                                     "samples": len(per_replica)}
            env = {**os.environ, "MLCTL_REPOSITORY": local_repo.uri, "MLCTL_TARGETS_PRODUCTION": ",".join(s.grpc_url for s in states)}
            help_times = timed_cli(["--help"], env, 10)
            status_times = timed_cli(["status", "digits"], env, 5)
            results["mlctl_help_s"] = {"median": statistics.median(help_times), "max": max(help_times)}
            results["mlctl_status_s"] = {"median": statistics.median(status_times), "max": max(status_times), "replicas": 2}
        finally:
            servers.stop_many([s.name for s in states], grace_s=10)
    finally:
        stop(moto)
    results["drift_report"] = "not measured: the prediction log and drift report are not built yet"
    write_json(args.out, "control_plane.json", results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
