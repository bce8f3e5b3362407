"""`mlctl perf` against a real Triton: windows, percentiles, the server-side breakdown, open loop, bad input."""

from __future__ import annotations

import json

import numpy as np
from support import run_mlctl

FAST = ("--window-s", "0.3", "--max-windows", "5")


def test_closed_loop_sweep_reports_each_point_with_the_server_breakdown(digits_server, tmp_path):
    png = tmp_path / "perf.png"
    done = run_mlctl("perf", "digits", "--url", digits_server.grpc_url, "--concurrency", "1,4", *FAST, "--plot", str(png), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    points = report["points"]
    assert [p["level"] for p in points] == [1, 4] and all(p["mode"] == "concurrency" for p in points)
    for p in points:
        assert p["errors"] == 0 and p["requests"] > 0 and 3 <= p["windows"] <= 5
        assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p95_ms"] <= p["p99_ms"]
        server = p["server"]
        # the statistics cover the measured windows: every answered request, nothing else (Triton counts a
        # request just after answering it, so one per client may land on the other side of a snapshot)
        assert abs(server["requests"] - p["requests"]) <= p["level"]
        assert 0 < server["compute_infer_us"] <= server["server_us"]
        assert server["queue_us"] >= 0 and server["mean_batch"] >= 1
        assert server["server_us"] / 1000 < p["p50_ms"] * 2  # server time is part of what the client waited
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "concurrency 4" in done.stderr  # progress on stderr, the result alone on stdout


def test_the_table_and_rows_per_request(digits_server):
    done = run_mlctl("perf", "digits", "--url", digits_server.grpc_url, "--concurrency", "2", "--rows", "4", *FAST)
    assert done.returncode == 0, done.stderr
    header, _, row = done.stdout.strip().splitlines()
    assert "p99 ms" in header and "infer us" in header
    cells = row.split()
    assert float(cells[3]) == round(float(cells[2]) * 4, 1)  # rows/s = 4 x requests/s


def test_open_loop_holds_the_rate(digits_server):
    done = run_mlctl("perf", "digits", "--url", digits_server.grpc_url, "--rate", "60", "--window-s", "0.5", "--json")
    assert done.returncode == 0, done.stderr
    point = json.loads(done.stdout)["points"][0]
    assert point["mode"] == "rate" and point["errors"] == 0
    assert abs(point["requests_per_s"] - 60) < 60 * 0.15


def test_inputs_from_a_file(digits_server, tmp_path):
    good, bad = tmp_path / "rows.npz", tmp_path / "bad.npz"
    np.savez(good, pixels=np.random.default_rng(1).random((3, 64), dtype=np.float32))
    np.savez(bad, other=np.zeros((3, 64), dtype=np.float32))
    done = run_mlctl("perf", "digits", "--url", digits_server.grpc_url, "--concurrency", "1", "--input", str(good), "--rows", "2", *FAST, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["points"][0]["rows_per_request"] == 2
    refused = run_mlctl("perf", "digits", "--url", digits_server.grpc_url, "--input", str(bad), *FAST)
    assert refused.returncode == 2 and "no array for input(s) pixels" in refused.stderr


def test_bad_targets_and_models_are_refused_clearly(digits_server):
    from controlplane.readiness import free_port

    unreachable = run_mlctl("perf", "digits", "--url", f"127.0.0.1:{free_port()}", *FAST)
    assert unreachable.returncode == 5 and "not reachable" in unreachable.stderr and not unreachable.stdout
    unknown = run_mlctl("perf", "nosuchmodel", "--url", digits_server.grpc_url, *FAST)
    assert unknown.returncode == 3 and "nosuchmodel" in unknown.stderr
