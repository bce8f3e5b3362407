"""kill -9 at random points of `mlctl publish` and `mlctl promote`, on a local and an S3 repository.

After every kill: the repository must read (every version folder with a manifest verifies), the channel
history must replay to the channels, and after `reconcile` every replica must serve the channel's version.
At the end a fresh replica must start from the repository and serve the channel's version.

Usage: .venv/bin/python scripts/crash_test.py [--trials 50] [--kinds local,s3] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from local_servers import start_s3, stop, triton_options

MLCTL = str(Path(sys.executable).parent / "mlctl")
KILL_WINDOW_S = {"publish": (0.2, 1.5), "promote": (0.3, 2.0)}  # a promote of 2 replicas takes ~1-1.5 s with its start


def run_kind(kind: str, trials: int, rng: random.Random, work: Path, env: dict) -> dict:
    from controlplane.demo import digits as demo
    from controlplane.release.lifecycle import Lifecycle
    from controlplane.store import open_store
    from controlplane.store.channel_store import ChannelStore
    from controlplane.store.repository import Repository
    from controlplane.triton.replicas import Replica
    from controlplane.triton.server.local import LocalServers
    from controlplane.triton.targets import Targets

    uri = f"s3://crash/{kind}-{rng.randrange(1 << 30)}" if kind == "s3" else str(work / f"{kind}-repo")
    if kind == "local":
        Path(uri).mkdir()
    repo = Repository(open_store(uri))
    v1, v2 = demo.publish_demo_versions(repo, "digits", (0, 1), work / f"{kind}-exports")
    export_dir = work / f"{kind}-exports" / "digits-seed0"
    servers = LocalServers(work / f"{kind}-home")
    options = [triton_options(uri, f"{kind}{i}", channel="production", exit_timeout_s=3) for i in range(2)]
    counts = {"trials": 0, "killed_mid_operation": 0, "finished_before_kill": 0, "unreadable_repository": 0,
              "history_inconsistent": 0, "served_disagrees_after_reconcile": 0, "reconcile_errors": 0,
              "interrupted_operations_closed": 0, "fresh_replica_serves_channel": None}
    examples: list[str] = []
    try:
        states = [servers.start(o) for o in options]
        targets = Targets({"production": tuple(s.grpc_url for s in states)})
        Lifecycle(repo, targets).promote("digits", v1, "production", "baseline")
        cli_env = {**os.environ, **env, "MLCTL_REPOSITORY": uri, "MLCTL_TARGETS_PRODUCTION": ",".join(targets.channels["production"])}
        for trial in range(trials):
            action = "publish" if trial % 2 == 0 else "promote"
            if action == "publish":
                args = ["publish", str(export_dir), "-n", "digits", "-f", "onnx"]
            else:
                current = ChannelStore(repo.store).load("digits")[0].channels.get("production")
                args = ["promote", "digits", str(v2 if current == v1 else v1), "--to", "production"]
            proc = subprocess.Popen([MLCTL, *args], env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(*KILL_WINDOW_S[action]))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                counts["killed_mid_operation"] += 1
            else:
                counts["finished_before_kill"] += 1
            proc.wait()
            counts["trials"] += 1
            problems = check(repo, targets, Lifecycle, ChannelStore, Replica, counts)
            examples += [f"{kind} trial {trial} ({action}): {p}" for p in problems][:3]
        # a replica that starts now must load the repository and serve the channel's version
        extra = triton_options(uri, f"{kind}-fresh", channel="production", exit_timeout_s=3)
        fresh = servers.start(extra)
        options.append(extra)
        replica = Replica(fresh.grpc_url)
        want = ChannelStore(repo.store).load("digits")[0].channels["production"]
        counts["fresh_replica_serves_channel"] = replica.served("digits") == {want}
        replica.close()
    finally:
        servers.stop_many([option.name for option in options], grace_s=10)
    counts["versions_published"] = len(repo.versions("digits"))
    counts["history_entries"] = len(ChannelStore(repo.store).load("digits")[0].history)
    return {"kind": kind, **counts, "examples": examples}


def check(repo, targets, Lifecycle, ChannelStore, Replica, counts: dict) -> list[str]:
    problems = []
    try:
        for version in repo.versions("digits"):
            if repo.verify("digits", version):
                problems.append(f"version {version} does not verify")
        state, _ = ChannelStore(repo.store).load("digits")
    except Exception as exc:  # any failure to read is what this drill counts
        counts["unreadable_repository"] += 1
        return [f"unreadable: {exc}"]
    if problems:
        counts["unreadable_repository"] += 1
    history_problems = state.inconsistencies()
    if history_problems:
        counts["history_inconsistent"] += 1
        problems += history_problems
    try:
        result = Lifecycle(repo, targets).reconcile(["digits"])
    except Exception as exc:  # counted, and the drill goes on
        result = {"changes": [], "errors": [f"reconcile raised {type(exc).__name__}: {exc}"]}
    counts["interrupted_operations_closed"] += sum(1 for c in result["changes"] if c.get("what") == "interrupted operation closed")
    if result["errors"]:
        counts["reconcile_errors"] += 1
        problems += result["errors"]
    state, _ = ChannelStore(repo.store).load("digits")
    if state.inconsistencies():
        counts["history_inconsistent"] += 1
    want = {state.channels["production"]}
    for url in targets.channels["production"]:
        replica = Replica(url)
        served = replica.served("digits")
        replica.close()
        if served != want:
            counts["served_disagrees_after_reconcile"] += 1
            problems.append(f"{url} serves {sorted(served)}, channel says {sorted(want)}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--kinds", default="local,s3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="mlctl-crash-"))
    os.environ["MLCTL_HOME"] = str(work / "home")
    results = []
    s3_proc = None
    try:
        for kind in args.kinds.split(","):
            env = {}
            if kind == "s3":
                s3_proc, env = start_s3("crash", threaded=False)
            results.append(run_kind(kind, args.trials, rng, work, env))
    finally:
        if s3_proc:
            stop(s3_proc)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(json.dumps(result))
    bad = any(r["unreadable_repository"] or r["history_inconsistent"] or r["served_disagrees_after_reconcile"]
              or r["reconcile_errors"] or not r["fresh_replica_serves_channel"] for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
