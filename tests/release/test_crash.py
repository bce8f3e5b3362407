"""The crash drill (scripts/crash_test.py) in small: kill -9 during publish and promote, local and S3."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "crash_test.py"


def test_kill_9_during_publish_and_promote_leaves_a_consistent_repository(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--trials", "4", "--seed", "7", "--json"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reports = {r["kind"]: r for r in json.loads(result.stdout)}
    assert set(reports) == {"local", "s3"}
    for report in reports.values():
        assert report["trials"] == 4
        assert report["unreadable_repository"] == 0
        assert report["history_inconsistent"] == 0
        assert report["served_disagrees_after_reconcile"] == 0
        assert report["reconcile_errors"] == 0
        assert report["fresh_replica_serves_channel"] is True
    assert sum(r["killed_mid_operation"] for r in reports.values()) >= 2  # the drill did interrupt something
