"""Prometheus configuration, alert rules and Grafana dashboards, generated from `definitions.py`.

`scripts/gen_observability.py` writes them under deploy/; a test checks the committed files are what this
module generates, so the dashboards and alerts use the CLI's PromQL, not copies of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from controlplane import defaults
from controlplane.observe.metrics import definitions as d
from controlplane.observe.metrics import security as sec
from controlplane.quality.drift import PREDICTION_DRIFT_ALPHA


@dataclass(frozen=True)
class Budgets:
    p99_compute_ms: float = 250.0
    error_rate: float = 0.01
    gpu_utilization: float = 0.95
    queue_growth: float = 2.0  # average queue time now vs. over the last hour
    min_queue_ms: float = 5.0
    accuracy_drop: float = defaults.ACCURACY_DROP  # below the reference accuracy
    min_feedback_coverage: float = defaults.MIN_FEEDBACK_COVERAGE
    prediction_drift_alpha: float = PREDICTION_DRIFT_ALPHA
    reject_share: float = 0.01  # of a model's gateway requests rejected by its queue policy (429)
    auth_failures_per_s: float = 1.0  # refused API keys, all gateways: someone guessing or a client misconfigured
    rate_limited_per_s: float = 5.0  # of one key: a client that ignores Retry-After, or needs a higher limit


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
            rule("MlctlRequestsRejected",
                 f"({d.render(d.REJECTED, sel, window)}) > {budgets.reject_share} * ({d.render(d.PREDICT_REQUESTS, sel, window)})",
                 "5m", "warning", f"over {budgets.reject_share:.0%} of requests to {{{{ $labels.model }}}} rejected: its queue is full"),
            rule("MlctlQueueTimeGrowing", f"({queue_now}) > {budgets.queue_growth} * ({queue_hour}) and ({queue_now}) > {budgets.min_queue_ms}",
                 "10m", "warning", "queue time of {{ $labels.model }} v{{ $labels.version }} is growing"),
        ],
    }, security_rules(budgets, rule), {
        "name": "mlctl-quality",
        "rules": [
            rule("MlctlAccuracyBelowReference",
                 f"mlctl_quality_accuracy < on (model, version) (mlctl_quality_reference_accuracy - {budgets.accuracy_drop})",
                 "30m", "warning", "accuracy of {{ $labels.model }} v{{ $labels.version }} is below its reference"),
            rule("MlctlDataDrift", "mlctl_drift_features_drifted > 0", "30m", "warning",
                 "{{ $value }} drifted features in {{ $labels.model }} v{{ $labels.version }}"),
            rule("MlctlPredictionDrift", f"mlctl_drift_prediction_pvalue < {budgets.prediction_drift_alpha}", "30m", "warning",
                 "class distribution of {{ $labels.model }} v{{ $labels.version }} moved from the reference"),
            rule("MlctlConceptDrift", "mlctl_drift_concept == 1", "15m", "critical",
                 "concept drift in {{ $labels.model }} v{{ $labels.version }}"),
            rule("MlctlFeedbackCoverageLow", f"mlctl_quality_feedback_coverage < {budgets.min_feedback_coverage}", "1h", "info",
                 "few labels arrive for {{ $labels.model }} v{{ $labels.version }}"),
            rule("MlctlEstimatedAccuracyBelowReference",
                 f"mlctl_quality_estimated_accuracy < on (model, version) (mlctl_quality_reference_accuracy - {budgets.accuracy_drop})",
                 "30m", "warning", "accuracy of {{ $labels.model }} v{{ $labels.version }} estimated without labels is below its reference"),
            rule("MlctlDataQuality", "mlctl_data_quality_flagged_features > 0", "30m", "warning",
                 "{{ $value }} features of {{ $labels.model }} v{{ $labels.version }} fail data quality (missing, out of range, unseen, constant)"),
            rule("MlctlMultivariateDrift", "mlctl_drift_multivariate == 1", "30m", "warning",
                 "the joint distribution of {{ $labels.model }} v{{ $labels.version }}'s inputs moved from the reference"),
        ],
    }]}


def security_rules(budgets: Budgets, rule) -> dict:
    def expr(key: str, window: str = "5m") -> str:
        return sec.BY_KEY[key].promql(window)

    rate = "sum by ({label}) (rate({metric}[5m]))"
    return {"name": "mlctl-security", "rules": [
        rule("MlctlTamperingDetected", f"{expr('tampering_detected')} > 0 or {sec.BY_KEY['tampering_detected'].appeared('5m')}",
             "0m", "critical",
             "a model version was changed after it was signed ({{ $labels.reason }}): it was refused; find who can write the repository"),
        rule("MlctlSignatureRefused", f"{expr('signature_refused')} > 0 or {sec.BY_KEY['signature_refused'].appeared('5m')}",
             "0m", "warning",
             "a version was refused by its channel's signature policy ({{ $labels.reason }})"),
        rule("MlctlAuthFailuresHigh", f"sum(rate(mlctl_security_auth_failures_total[5m])) > {budgets.auth_failures_per_s}", "10m",
             "warning", f"over {budgets.auth_failures_per_s:g} requests/s refused for their API key"),
        rule("MlctlControlCallsRefused", f"sum({expr('refused_control_calls')}) > 0", "0m", "warning",
             "admin-scope calls to the gateway were refused"),
        rule("MlctlKeyRateLimited",
             f"{rate.format(label='key', metric='mlctl_security_rate_limited_total')} > {budgets.rate_limited_per_s}", "10m", "info",
             f"key {{{{ $labels.key }}}} is refused over {budgets.rate_limited_per_s:g} requests/s by its rate limit"),
    ]}


def security_row(top: int) -> list[dict]:
    """The dashboard's security row (a Grafana row panel and one panel per security figure), from `top` down."""
    panels: list[dict] = [{"id": 100, "type": "row", "title": "Security", "collapsed": False, "panels": [],
                           "gridPos": {"h": 1, "w": 24, "x": 0, "y": top}}]
    for index, figure in enumerate(sec.FIGURES):
        panels.append({
            "id": 101 + index, "type": "timeseries", "title": figure.title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 8, "x": (index % 3) * 8, "y": top + 1 + (index // 3) * 8},
            "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
            "targets": [{"refId": "A", "expr": figure.promql("$__rate_interval"), "legendFormat": f"{{{{{figure.label}}}}}"}],
        })
    return panels


def prometheus_config(triton: list[str], gateway: list[str], rule_files: list[str], interval: str = "15s",
                      quality: list[str] | None = None) -> dict:
    jobs = [{"job_name": "triton", "static_configs": [{"targets": triton}]}]
    if gateway:
        jobs.append({"job_name": "gateway", "static_configs": [{"targets": gateway}]})
    if quality:
        jobs.append({"job_name": "mlctl-quality", "static_configs": [{"targets": quality}]})
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "rule_files": rule_files, "scrape_configs": jobs}


def grafana_dashboard() -> dict:
    sel = 'model="$model",version=~"$version"'
    panels = []
    for index, figure in enumerate(d.FIGURES):
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
        "panels": panels + security_row(((len(panels) + 2) // 3) * 8),
    }


QUALITY_PANELS = (
    ("Accuracy vs reference", ['mlctl_quality_accuracy{model="$model"}', 'mlctl_quality_reference_accuracy{model="$model"}'], "percentunit"),
    ("F1 per class", ['mlctl_quality_class_f1{model="$model"}'], "percentunit"),
    ("Feedback coverage", ['mlctl_quality_feedback_coverage{model="$model"}'], "percentunit"),
    ("Label delay (median)", ['mlctl_quality_label_delay_seconds{model="$model"}'], "s"),
    ("Drifted features", ['mlctl_drift_features_drifted{model="$model"}'], "short"),
    ("Largest PSI", ['mlctl_drift_psi_max{model="$model"}'], "short"),
    ("Prediction drift p-value", ['mlctl_drift_prediction_pvalue{model="$model"}'], "short"),
    ("Concept drift", ['mlctl_drift_concept{model="$model"}'], "short"),
    ("Estimated (no labels) vs realised accuracy", ['mlctl_quality_estimated_accuracy{model="$model"}',
                                                    'mlctl_quality_accuracy{model="$model"}'], "percentunit"),
    ("Data-quality flagged features", ['mlctl_data_quality_flagged_features{model="$model"}'], "short"),
    ("Multivariate drift: domain AUROC, PCA error / threshold",
     ['mlctl_drift_domain_auroc{model="$model"}', 'mlctl_drift_pca_error_ratio{model="$model"}'], "short"),
)


def grafana_quality_dashboard() -> dict:
    """Quality panels over the gauges of `mlctl monitor export` (controlplane.quality.exporter)."""
    panels = []
    for index, (title, exprs, unit) in enumerate(QUALITY_PANELS):
        panels.append({
            "id": index + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": (index % 2) * 12, "y": (index // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": "v{{version}} {{class}}"} for i, e in enumerate(exprs)],
        })
    return {
        "uid": "mlctl-quality", "title": "mlctl: model quality and drift", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-24h", "to": "now"}, "refresh": "1m",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "model", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(mlctl_quality_predictions, model)", "refresh": 2},
        ]},
        "panels": panels,
    }
