"""Observability: metric maths without servers, then a real Prometheus (Debian's) scraping a real Triton."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import free_port, run_mlctl

from controlplane.errors import MlctlError, UsageError
from controlplane.observe.metrics import artifacts, direct
from controlplane.observe.metrics import definitions as d
from controlplane.observe.metrics.report import DirectSource, PrometheusSource
from controlplane.triton.client import TritonClient

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


# --- pure -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25)])
def test_parse_window(text, seconds):
    assert d.parse_window(text) == seconds


@pytest.mark.parametrize("text", ["5", "five minutes", "0s", "-5m", "5y"])
def test_malformed_window(text):
    with pytest.raises(UsageError, match="is not a duration"):
        d.parse_window(text)


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = {0.1: 10, 0.2: 30, 0.5: 40, float("inf"): 40}
    assert direct.histogram_quantile(0.25, buckets) == pytest.approx(0.1)  # rank 10 ends the first bucket
    assert direct.histogram_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: halfway through (0.1, 0.2]
    assert direct.histogram_quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * (39.6 - 30) / 10)
    assert direct.histogram_quantile(0.5, {}) is None


def sample(name, value, **labels):
    return direct.Sample(name, labels, value, "r1")


def test_direct_figures_from_two_scrapes():
    m = {"model": "m", "version": "2"}
    before = [sample("nv_inference_request_success", 100, **m), sample("nv_inference_count", 100, **m),
              sample("nv_inference_exec_count", 50, **m), sample("nv_inference_request_duration_us", 1e6, **m),
              sample("nv_inference_request_failure", 0, reason="REJECTED", **m)]
    after = [sample("nv_inference_request_success", 300, **m), sample("nv_inference_count", 500, **m),
             sample("nv_inference_exec_count", 100, **m), sample("nv_inference_request_duration_us", 3e6, **m),
             sample("nv_inference_request_failure", 50, reason="REJECTED", **m),
             sample("nv_inference_request_success", 999, model="m", version="1")]
    f = direct.figures(before, after, 10.0, "m", "2")
    assert f["success"] == 200 and f["failures"] == 50
    assert f["requests_per_s"] == 25 and f["inferences_per_s"] == 40
    assert f["error_rate"] == pytest.approx(0.2)
    assert f["avg_request_ms"] == pytest.approx(10.0)
    assert f["batch_efficiency"] == 8
    assert direct.failures_by_reason(before, after, "m", "2") == {"REJECTED": 50}


def test_dashboards_and_alerts_use_the_cli_promql():
    dashboard = artifacts.grafana_dashboard()
    by_title = {p["title"]: p["targets"][0]["expr"] for p in dashboard["panels"] if p["type"] != "row"}  # rows hold no query
    sel = 'model="$model",version=~"$version"'
    for figure in d.FIGURES:
        expected = artifacts.per_version(figure.promql) if figure.per_version else figure.promql
        assert by_title[figure.title] == d.render(expected, sel, "$__rate_interval")
    assert subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_observability.py"), "--check"]).returncode == 0


@pytest.mark.skipif(PROMTOOL is None, reason="promtool comes with Debian's prometheus package (scripts/test.sh installs it)")
def test_promtool_accepts_config_and_rules(tmp_path):
    rules = ROOT / "deploy" / "prometheus" / "rules" / "mlctl-alerts.yml"
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{sum(len(g['rules']) for g in artifacts.alert_rules()['groups'])} rules found" in check.stdout
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["rule_files"] = [str(rules)]
    (tmp_path / "p.yml").write_text(yaml.safe_dump(config))
    check = subprocess.run([PROMTOOL, "check", "config", str(tmp_path / "p.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


# --- against real servers ---------------------------------------------------------------------------

def send(url: str, model: str, good: int, bad: int, concurrency: int) -> None:
    """`good` valid requests and `bad` ones whose token ids lie outside the vocabulary: Triton accepts their
    shapes and dtypes, the model itself fails on them (a backend failure)."""
    def inputs(valid: bool) -> dict:
        return {"tokens": np.array([[1, 2, 3] if valid else [1, 50, 3]], np.int64),
                "feats": np.zeros((1, 5), np.float32), "mask": np.ones((1, 2), bool)}

    def one(i):
        with TritonClient(url) as client:
            try:
                client.infer(model, inputs(i < good))
            except MlctlError:
                assert i >= good

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(good)))
    for i in range(good, good + bad):  # one at a time: a bad request never shares an execution with a good one
        one(i)


@pytest.mark.e2e
def test_known_load_is_reported_by_both_sources(triton, prometheus):
    good, bad, concurrency = 240, 30, 4
    metrics_url = triton.metrics_url
    # increase() extrapolates by up to half a scrape interval past the samples: with under ~10 s of them (a server
    # that took longer to start, e.g. warming its models up) that alone exceeds the tolerance below
    from controlplane.readiness import wait_until
    series = 'count_over_time(nv_inference_request_success{model="metered",version="1"}[2m])'
    wait_until(lambda: (PrometheusSource(prometheus).scalar(series) or 0) >= 12, 60, "12 s of samples in Prometheus")
    direct_source = DirectSource([metrics_url])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(direct_source.report, "metered", "1", "6s")
        time.sleep(1.0)
        send(triton.grpc_url, "metered", good, bad, concurrency)
        by_scrapes = pending.result()
    figures = by_scrapes.versions[0].figures
    assert figures["success"] == good  # exact: two scrapes bracket the load
    assert figures["failures"] == bad
    assert by_scrapes.versions[0].failures_by_reason == {"BACKEND": bad}
    assert figures["error_rate"] == pytest.approx(bad / (good + bad))
    assert figures["batch_efficiency"] >= 1.0
    assert figures["p99_compute_ms"] is not None and figures["p99_request_ms"] is not None
    time.sleep(3.0)  # let Prometheus scrape the end of the load (1 s interval)

    result = run_mlctl("metrics", "metered", "--version", "1", "--window", "2m", "--json", "--prometheus-url", prometheus)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    prom = report["versions"][0]["figures"]
    assert report["source"].startswith("prometheus") and "histogram_quantile" in report["sources"]["p99_compute_ms"]
    # increase() extrapolates to the window's edges: agreement within scrape granularity
    assert prom["success"] == pytest.approx(good, rel=0.06)
    assert prom["failures"] == pytest.approx(bad, rel=0.1)
    assert report["versions"][0]["failures_by_reason"] == {
        k: pytest.approx(v, rel=0.1) for k, v in by_scrapes.versions[0].failures_by_reason.items()}
    assert prom["error_rate"] == pytest.approx(figures["error_rate"], rel=0.1)
    assert prom["p99_compute_ms"] > 0
    assert report["server"]["cpu_utilization"] is not None
    assert report["server"]["cpu_memory_used_bytes"] > 0
    assert report["server"]["gpu_utilization"] is None  # no GPU here: said as missing, not as zero
    started = time.perf_counter()
    five = run_mlctl("metrics", "metered", "--window", "5m", "--json", "--prometheus-url", prometheus)
    elapsed = time.perf_counter() - started
    assert five.returncode == 0
    print(f"\nagreement: sent {good} ok + {bad} failing at concurrency {concurrency}; direct: {figures['success']:.0f} ok, "
          f"{figures['failures']:.0f} failed {by_scrapes.versions[0].failures_by_reason}; prometheus (2m window): "
          f"{prom['success']:.1f} ok, {prom['failures']:.1f} failed {report['versions'][0]['failures_by_reason']}, "
          f"error rate {prom['error_rate']:.4f} vs direct {figures['error_rate']:.4f}; mlctl metrics --window 5m: {elapsed:.2f} s")


@pytest.mark.e2e
def test_metrics_table_compare_and_errors(triton, prometheus):
    send(triton.grpc_url, "metered", 20, 0, 2)
    time.sleep(2.5)
    table = run_mlctl("metrics", "metered", "--window", "2m", "--prometheus-url", prometheus)
    assert table.returncode == 0, table.stderr
    assert "source: prometheus" in table.stdout and "Requests/s" in table.stdout and "version 1" in table.stdout
    compare = run_mlctl("metrics", "compare", "mlp", "1", "2", "--window", "5m", "--prometheus-url", prometheus, "--json")
    assert compare.returncode == 0, compare.stderr  # both loaded: a version without traffic reports zero traffic
    assert [v["version"] for v in json.loads(compare.stdout)["versions"]] == ["1", "2"]
    unknown = run_mlctl("metrics", "ghost", "--prometheus-url", prometheus)
    assert unknown.returncode == 3 and "no metrics for model 'ghost'" in unknown.stderr
    down = run_mlctl("metrics", "metered", "--prometheus-url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 5 and "not reachable" in down.stderr
    window = run_mlctl("metrics", "metered", "--window", "five", "--prometheus-url", prometheus)
    assert window.returncode == 2 and "is not a duration" in window.stderr
    triton_down = run_mlctl("metrics", "metered", "--source", "direct", "--window", "1s", "--metrics-url", f"http://127.0.0.1:{free_port()}/metrics")
    assert triton_down.returncode == 5 and "not reachable" in triton_down.stderr


@pytest.mark.e2e
def test_a_version_without_metrics_is_not_found_and_an_idle_version_reports_zero_traffic(triton, prometheus):
    """Decided: a version with no series in the window (never loaded there, a typo) is not found (exit 3); a
    version that was loaded but got no request reports zero traffic (exit 0), which is the honest answer."""
    missing = run_mlctl("metrics", "metered", "--version", "9", "--window", "2m", "--prometheus-url", prometheus, "--json")
    assert missing.returncode == 3 and missing.stdout == ""
    assert "version 9 of model 'metered' has no metrics in Prometheus" in missing.stderr
    assert "versions with metrics: 1)" in missing.stderr
    # mlp v2 is loaded (version policy: all) and no test of this module sends it a request
    idle = run_mlctl("metrics", "mlp", "--version", "2", "--window", "15s", "--prometheus-url", prometheus, "--json")
    assert idle.returncode == 0, idle.stderr
    (row,) = json.loads(idle.stdout)["versions"]
    assert row["version"] == "2" and row["idle"] is True
    assert row["figures"]["success"] == 0 and row["figures"]["requests_per_s"] == 0
    assert row["figures"]["error_rate"] is None  # no request, no rate: null, never NaN
    assert "version 2 of mlp was loaded but received no request in the last 15s" in idle.stderr


@pytest.mark.e2e
def test_direct_source_checks_model_and_version_before_waiting(triton):
    started = time.monotonic()
    typo = run_mlctl("metrics", "mpl", "--source", "direct", "--window", "10m", "--metrics-url", triton.metrics_url)
    assert typo.returncode == 3 and typo.stdout == ""
    assert time.monotonic() - started < 60  # at once, not after the 10-minute window
    assert "no metrics for model 'mpl'" in typo.stderr and "models loaded: " in typo.stderr
    assert "metered" in typo.stderr and "mlp" in typo.stderr
    version = run_mlctl("metrics", "metered", "--version", "9", "--source", "direct", "--window", "10m", "--metrics-url", triton.metrics_url)
    assert version.returncode == 3 and version.stdout == ""
    assert "version 9 of model 'metered' has no metrics at" in version.stderr and "versions with metrics: 1)" in version.stderr
    assert time.monotonic() - started < 120

    calls = []
    DirectSource([triton.metrics_url]).report("metered", "1", "2s", progress=lambda waited, total: calls.append((waited, total)))
    assert calls[0] == (0.0, 2.0) and calls[-1] == (2.0, 2.0) and len(calls) >= 3
    assert [w for w, _ in calls] == sorted(w for w, _ in calls)
    waited = run_mlctl("metrics", "metered", "--source", "direct", "--window", "1s", "--metrics-url", triton.metrics_url, "--json")
    assert waited.returncode == 0, waited.stderr
    assert [v["version"] for v in json.loads(waited.stdout)["versions"]] == ["1"]
    assert "waiting 1 s (--window) for the second scrape" in waited.stderr


@pytest.mark.e2e
def test_health(triton, prometheus):
    result = run_mlctl("-r", str(Path(triton.repository)), "health", "--url", triton.grpc_url, "--prometheus-url", prometheus, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert any(c["name"].startswith("model metered v1") and c["ok"] for c in checks)
    assert any(c["name"].startswith("prometheus") and c["ok"] for c in checks)
    dead = run_mlctl("-r", str(Path(triton.repository)), "health", "--url", f"127.0.0.1:{free_port()}", "--json")
    assert dead.returncode == 1 and not json.loads(dead.stdout)["healthy"]
    missing_repo = run_mlctl("-r", "/nonexistent/repo", "health", "--url", triton.grpc_url)
    assert missing_repo.returncode == 1 and "FAIL" in missing_repo.stdout


def json_events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_json_events_for_actions(tmp_path, exports):
    (tmp_path / "repo").mkdir()
    result = run_mlctl("--log-format", "json", "-r", str(tmp_path / "repo"), "publish", str(exports["mlp"].path), "-n", "evented", "-f", "onnx")
    assert result.returncode == 0
    (event,) = json_events(result.stderr)
    assert event["action"] == "publish" and event["model"] == "evented" and event["outcome"] == "succeeded"
    assert event["duration_s"] >= 0 and event["error"] is None
    failed = run_mlctl("--log-format", "json", "-r", str(tmp_path / "repo"), "promote", "evented", "9", "--to", "production",
                       "--create-channel")  # a new channel must be asked for; the version check then fails
    assert "version 9 of model 'evented' not found" in failed.stderr
    (event,) = json_events(failed.stderr)
    assert failed.returncode == 3
    assert (event["action"], event["model"], event["version"], event["channel"], event["outcome"], event["exit_code"]) == (
        "promote", "evented", 9, "production", "failed", 3)
    assert "evented" in event["error"]


def test_every_gateway_and_security_series_that_rules_dashboards_and_queries_name_is_exported():
    """A query on a name the gateway never exports matches nothing and an alert on it never fires: compare the names
    used in the generated rules, dashboards and query definitions with what the gateway's registry exposes."""
    import re
    from pathlib import Path

    from controlplane.feedback.gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics(lambda: (0, 0), lambda: {("signature_refused", "unsigned"): 1})
    metrics.observe("predict", "m", "1", "429", 0.001)
    metrics.auth_failures.labels("gateway", "unknown_key").inc()
    metrics.refused_control.labels("gateway", "/v1/admin").inc()
    metrics.rate_limited.labels("gateway", "k").inc()
    metrics.oversized.labels("gateway", "k").inc()
    exported = set(re.findall(r"^(\w+)[{ ]", metrics.render()[0].decode(), re.M))
    root = Path(__file__).resolve().parents[2]
    sources = [*root.glob("deploy/prometheus/rules/*.yml"), *root.glob("deploy/grafana/dashboards/*.json"),
               *root.glob("controlplane/observe/metrics/*.py")]
    named = {name for path in sources for name in re.findall(r"mlctl_(?:gateway|security)_\w+", path.read_text())}
    queried = {name for name in named if not name.endswith(("_seconds", "_bucket"))} - {"mlctl_gateway_request_duration"}
    assert queried and queried <= exported, sorted(queried - exported)
