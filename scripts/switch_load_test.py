"""Promote/rollback cycles under load: N local replicas of one channel, clients over gRPC and HTTP.

Reports failed requests, versions seen, answers from the old version after a switch completed, and the
time per switch and per replica (median, max). Bounded: --cycles switches pairs and --max-seconds overall.

Usage: .venv/bin/python scripts/switch_load_test.py [--replicas 3] [--cycles 20] [--clients 8] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from local_servers import channel_replicas, demo_load, scratch_repository

from controlplane.demo import digits as demo
from controlplane.release.lifecycle import Lifecycle
from controlplane.triton.load import Switch, judge_switches
from controlplane.triton.targets import Targets

# Measurement windows, not readiness (every replica is ready before the load starts):
BEFORE_FIRST_SWITCH_S = 1.0  # answers from the baseline version before anything switches
AFTER_LAST_SWITCH_S = 0.5  # answers after the last switch, where an old version would show


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work, repo = scratch_repository("mlctl-switch-")
    v1, v2 = demo.publish_demo_versions(repo, "digits", (0, 1), work / "exports")
    with channel_replicas(work / "home", repo.uri, args.replicas) as states:
        lifecycle = Lifecycle(repo, Targets({"production": tuple(s.grpc_url for s in states)}))
        lifecycle.promote("digits", v1, "production", "baseline")
        load = demo_load("digits", states, args.clients, args.max_seconds)
        time.sleep(BEFORE_FIRST_SWITCH_S)
        switches, per_replica = [], []
        deadline = time.monotonic() + args.max_seconds
        for _ in range(args.cycles):
            if time.monotonic() > deadline:
                break
            for action, version in (("promote", v2), ("rollback", v1)):
                t0 = time.monotonic()
                if action == "promote":
                    report = lifecycle.promote("digits", version, "production", "load test")
                else:
                    report = lifecycle.rollback("digits", "production", reason="load test")
                switches.append(Switch(str(version), t0, time.monotonic()))
                per_replica += [r["seconds"] for r in report.replicas]
        time.sleep(AFTER_LAST_SWITCH_S)
        records = load.stop()
        verdict = judge_switches(records, switches, {str(v1), str(v2)})
        verdict["replicas"] = args.replicas
        verdict["clients"] = args.clients
        verdict["per_replica_s_median"] = round(float(np.median(per_replica)), 3) if per_replica else None
        verdict["per_replica_s_max"] = round(max(per_replica), 3) if per_replica else None
        verdict["history_entries"] = len(lifecycle.history("digits"))
        span = records[-1].end - records[0].start if records else 0
        verdict["requests_per_s"] = round(len(records) / span, 1) if span else None
    if args.json:
        print(json.dumps(verdict, indent=2))
    else:
        for key, value in verdict.items():
            print(f"{key:26s} {value}")
    ok = verdict["failures"] == 0 and verdict["unexpected_versions"] == 0 and verdict["old_version_after_switch"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
