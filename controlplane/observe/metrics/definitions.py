"""What `mlctl metrics` reports, defined once as PromQL over Triton's metrics.

The CLI (Prometheus source), the Grafana dashboards and the alert rules all take their expressions from
here; the direct source computes the same figures from two scrapes (`direct.py`).
Placeholders: $sel is the label selector (model, version, ...), $w the window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from string import Template

from controlplane.errors import UsageError

HISTOGRAM = "mlctl_execute_duration_seconds"  # exported by the stand-in backends, per model and version
QUANTILES = (0.5, 0.95, 0.99)


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str
    promql: str  # summed across replicas
    per_version: bool = True


SUCCESS = "sum(increase(nv_inference_request_success{$sel}[$w]))"
FAILURE = "(sum(increase(nv_inference_request_failure{$sel}[$w])) or vector(0))"


# Requests a model's queue policy rejected (queue full), as the gateway answered them (429). Triton 2.51 does not
# count these in nv_inference_request_failure{reason="REJECTED"} (measured: 0 after ~17k rejects), so the
# gateway's own counter is the source; a rejected request has no version, hence per model, not per version.
REJECTED = 'sum by (model) (rate(mlctl_gateway_requests_total{route="predict",status="429"}[$w]))'
PREDICT_REQUESTS = 'sum by (model) (rate(mlctl_gateway_requests_total{route="predict"}[$w]))'


def _avg_duration_ms(*names: str) -> str:
    total = " + ".join(f"sum(increase(nv_inference_{n}_duration_us{{$sel}}[$w]))" for n in names)
    return f"({total}) / 1000 / {SUCCESS}"


FIGURES: tuple[Figure, ...] = (
    Figure("requests_per_s", "Requests/s", "req/s",
           "sum(rate(nv_inference_request_success{$sel}[$w])) + (sum(rate(nv_inference_request_failure{$sel}[$w])) or vector(0))"),
    Figure("inferences_per_s", "Inferences/s", "inf/s", "sum(rate(nv_inference_count{$sel}[$w]))"),
    Figure("success", "Successful requests", "count", SUCCESS),
    Figure("failures", "Failed requests", "count", FAILURE),
    Figure("error_rate", "Error rate", "ratio", f"{FAILURE} / ({SUCCESS} + {FAILURE})"),
    Figure("avg_request_ms", "Average request time", "ms", _avg_duration_ms("request")),
    Figure("avg_queue_ms", "Average queue time", "ms", _avg_duration_ms("queue")),
    Figure("avg_compute_ms", "Average compute time", "ms", _avg_duration_ms("compute_input", "compute_infer", "compute_output")),
    Figure("pending_requests", "Pending requests", "count", "sum(nv_inference_pending_request_count{$sel})"),
    Figure("batch_efficiency", "Inferences per execution", "ratio",
           "sum(increase(nv_inference_count{$sel}[$w])) / sum(increase(nv_inference_exec_count{$sel}[$w]))"),
    *(Figure(f"p{round(q * 100)}_compute_ms", f"p{round(q * 100)} compute latency (histogram, all replicas)", "ms",
             f"histogram_quantile({q}, sum by (le) (rate({HISTOGRAM}_bucket{{$sel}}[$w]))) * 1000") for q in QUANTILES),
    *(Figure(f"p{round(q * 100)}_request_ms", f"p{round(q * 100)} request latency (summary, worst replica)", "ms",
             f'max(nv_inference_request_summary_us{{$sel,quantile="{q}"}}) / 1000') for q in QUANTILES),
    Figure("gpu_utilization", "GPU utilisation", "ratio", "avg(nv_gpu_utilization)", per_version=False),
    Figure("gpu_memory_used_bytes", "GPU memory used", "bytes", "sum(nv_gpu_memory_used_bytes)", per_version=False),
    Figure("gpu_memory_total_bytes", "GPU memory total", "bytes", "sum(nv_gpu_memory_total_bytes)", per_version=False),
    Figure("gpu_power_watts", "GPU power", "W", "sum(nv_gpu_power_usage)", per_version=False),
    Figure("cpu_utilization", "CPU utilisation", "ratio", "avg(nv_cpu_utilization)", per_version=False),
    Figure("cpu_memory_used_bytes", "CPU memory used", "bytes", "sum(nv_cpu_memory_used_bytes)", per_version=False),
    Figure("rejected_per_s", "Rejected requests/s (queue full, gateway, last 1m)", "req/s",
           'sum(rate(mlctl_gateway_requests_total{route="predict",status="429"}[1m])) or vector(0)', per_version=False),
)
BY_KEY = {f.key: f for f in FIGURES}
FAILURES_BY_REASON = "sum by (reason) (increase(nv_inference_request_failure{$sel}[$w]))"
# Versions (models) with a counter at any time in the window: loaded then, whether or not they had traffic
# (Triton exports a version's counters from its load on, at 0 until the first request).
VERSIONS = "sum by (version) (max_over_time(nv_inference_count{$sel}[$w]))"
MODELS = "count by (model) (max_over_time(nv_inference_count[$w]))"

_WINDOW = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str) -> float:
    """Seconds in a Prometheus duration like 30s, 5m, 1h."""
    match = _WINDOW.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"window {text!r} is not a duration", hint="use e.g. 30s, 5m or 1h")
    return int(match.group(1)) * _SECONDS[match.group(2)]


def selector(model: str, version: str | None = None) -> str:
    parts = [f'model="{model}"']
    if version:
        parts.append(f'version="{version}"')
    return ",".join(parts)


def render(template: str, sel: str, window: str) -> str:
    return Template(template).substitute(sel=sel, w=window)
