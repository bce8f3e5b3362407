"""Prometheus configuration, alert rules and Grafana dashboards, generated from `definitions.py`.

`scripts/gen_observability.py` writes them under deploy/; a test checks the committed files are what this
module generates, so the dashboards and alerts use the CLI's PromQL, not copies of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from controlplane.metrics import definitions as d


@dataclass(frozen=True)
class Budgets:
    p99_compute_ms: float = 250.0
    error_rate: float = 0.01
    gpu_utilization: float = 0.95
    queue_growth: float = 2.0  # average queue time now vs. over the last hour
    min_queue_ms: float = 5.0


def per_version(expr: str) -> str:
    """The same expression, kept apart per version (for dashboards and alerts)."""
    expr = re.sub(r"\bsum by \(le\)", "sum by (le, model, version)", expr)
    expr = re.sub(r"\b(sum|max)\(", r"\1 by (model, version) (", expr)
    return expr.replace("or vector(0)", "or (0 * sum by (model, version) (nv_inference_count{$sel}))")


def alert_rules(budgets: Budgets = Budgets()) -> dict:
    sel = ""
    window = "5m"

    def expr(key: str) -> str:
        return d.render(per_version(d.BY_KEY[key].promql), sel, window)

    def rule(name, expression, duration, severity, summary):
        return {"alert": name, "expr": expression, "for": duration, "labels": {"severity": severity},
                "annotations": {"summary": summary}}

    queue_now = d.render(per_version(d.BY_KEY["avg_queue_ms"].promql), sel, "5m")
    queue_hour = d.render(per_version(d.BY_KEY["avg_queue_ms"].promql), sel, "1h")
    return {"groups": [{
        "name": "mlctl-serving",
        "rules": [
            rule("MlctlP99LatencyOverBudget", f"{expr('p99_compute_ms')} > {budgets.p99_compute_ms}", "5m", "warning",
                 f"p99 compute latency of {{{{ $labels.model }}}} v{{{{ $labels.version }}}} above {budgets.p99_compute_ms} ms"),
            rule("MlctlErrorRateHigh", f"{expr('error_rate')} > {budgets.error_rate}", "5m", "critical",
                 f"error rate of {{{{ $labels.model }}}} v{{{{ $labels.version }}}} above {budgets.error_rate:.0%}"),
            rule("MlctlTritonReplicaDown", 'up{job="triton"} == 0', "1m", "critical",
                 "Triton replica {{ $labels.instance }} is down"),
            rule("MlctlModelNotReady",
                 "(count by (model, instance) (max_over_time(nv_inference_count[1h]))) unless (count by (model, instance) (nv_inference_count))",
                 "2m", "critical", "{{ $labels.model }} has no ready version on {{ $labels.instance }}"),
            rule("MlctlGpuSaturated", f"avg by (instance, gpu_uuid) (nv_gpu_utilization) > {budgets.gpu_utilization}", "10m", "warning",
                 "GPU {{ $labels.gpu_uuid }} on {{ $labels.instance }} saturated"),
            rule("MlctlQueueTimeGrowing", f"({queue_now}) > {budgets.queue_growth} * ({queue_hour}) and ({queue_now}) > {budgets.min_queue_ms}",
                 "10m", "warning", "queue time of {{ $labels.model }} v{{ $labels.version }} is growing"),
        ],
    }]}


def prometheus_config(triton: list[str], gateway: list[str], rule_files: list[str], interval: str = "15s") -> dict:
    jobs = [{"job_name": "triton", "static_configs": [{"targets": triton}]}]
    if gateway:
        jobs.append({"job_name": "gateway", "static_configs": [{"targets": gateway}]})
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "rule_files": rule_files, "scrape_configs": jobs}


def grafana_dashboard() -> dict:
    sel = 'model="$model",version=~"$version"'
    panels = []
    for index, figure in enumerate(f for f in d.FIGURES):
        expr = d.render(per_version(figure.promql) if figure.per_version else figure.promql, sel, "$__rate_interval")
        panels.append({
            "id": index + 1,
            "type": "timeseries",
            "title": figure.title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 8, "x": (index % 3) * 8, "y": (index // 3) * 8},
            "fieldConfig": {"defaults": {"unit": {"ms": "ms", "ratio": "percentunit", "bytes": "bytes", "req/s": "reqps"}.get(figure.unit, "short")}, "overrides": []},
            "targets": [{"refId": "A", "expr": expr, "legendFormat": "v{{version}}" if figure.per_version else figure.title}],
        })
    return {
        "uid": "mlctl-serving",
        "title": "mlctl: serving per model and version",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "model", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(nv_inference_count, model)", "refresh": 2},
            {"name": "version", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": 'label_values(nv_inference_count{model="$model"}, version)', "refresh": 2, "includeAll": True, "multi": True,
             "allValue": ".*"},
        ]},
        "panels": panels,
    }
