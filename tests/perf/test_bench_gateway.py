"""The gateway benchmark's bounded form (its long form and figures: docs/benchmarks.md): one short point through
both gateways, so the script that produces the issue's figures keeps working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_the_gateway_benchmark_reports_both_gateways_against_direct_triton(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts/bench/gateway.py"), "--seconds", "0.5", "--concurrency", "4",
                           "--paths", "binary,binary-coalesced", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r["path"]: r for r in json.loads((tmp_path / "gateway.json").read_text())}
    assert set(rows) == {"direct Triton gRPC", "direct Triton HTTP binary", "gateway v2 binary", "gateway v2 binary, coalesced"}
    for name in ("gateway v2 binary", "gateway v2 binary, coalesced"):
        row = rows[name]
        assert row["failures"] == 0 and row["requests"] > 0, row
        assert row["gateway_cpu_ms_per_request"] > 0 and row["triton_cpu_ms_per_request"] > 0
        assert row["throughput_kept"] > 0 and row["gateway_cpu_share_of_direct_triton"] > 0


def test_the_relay_floor_benchmark_measures_a_bare_relay_and_the_gateway_against_one_triton(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts/bench/gateway_relay.py"), "--rounds", "1", "--seconds", "0.5",
                           "--concurrency", "4", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gateway_relay.json").read_text())
    summary = {s["path"]: s for s in report["summary"]}
    assert {"direct", "python relay", "gateway"} <= set(summary)  # nginx only where it is installed
    for name in set(summary) - {"direct"}:
        assert summary[name]["relay_cpu_ms_per_request"] > 0 and summary[name]["relay_share_of_triton"] > 0, summary[name]
        assert all(r["failures"] == 0 and r["requests"] > 0 for r in report["rows"][name])
