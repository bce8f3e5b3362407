"""The figures of `definitions.py` computed from two scrapes of Triton's /metrics, for when no Prometheus
runs. Pure: takes parsed samples, returns numbers; `scrape` is the only I/O here."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass

from controlplane.errors import UnavailableError
from controlplane.observe.metrics.definitions import HISTOGRAM, QUANTILES


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict
    value: float
    instance: str


def scrape(url: str, timeout_s: float = 5.0) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise UnavailableError(f"Triton metrics at {url} not reachable: {exc}") from exc
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # the parser names counter samples <name>_total; Triton's own names carry no suffix
            name = family.name if family.type == "counter" and s.name == f"{family.name}_total" else s.name
            samples.append(Sample(name, dict(s.labels), float(s.value), url))
    return samples


def _total(samples: Iterable[Sample], name: str, **match: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in match.items()))


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts {le: count} (linear within a bucket)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (count - previous_count)
        previous_bound, previous_count = bound, count
    return bounds[-1]


def figures(before: list[Sample], after: list[Sample], seconds: float, model: str, version: str) -> dict[str, float | None]:
    """Per-version figures over the interval between two scrapes (all replicas summed)."""
    sel = {"model": model, "version": version}

    def delta(name: str, **extra: str) -> float:
        return _total(after, name, **sel, **extra) - _total(before, name, **sel, **extra)

    success = delta("nv_inference_request_success")
    failures = delta("nv_inference_request_failure")
    executions = delta("nv_inference_exec_count")
    inferences = delta("nv_inference_count")
    out: dict[str, float | None] = {
        "requests_per_s": (success + failures) / seconds,
        "inferences_per_s": inferences / seconds,
        "success": success,
        "failures": failures,
        "error_rate": failures / (success + failures) if success + failures else None,
        "avg_request_ms": delta("nv_inference_request_duration_us") / 1000 / success if success else None,
        "avg_queue_ms": delta("nv_inference_queue_duration_us") / 1000 / success if success else None,
        "avg_compute_ms": sum(delta(f"nv_inference_{n}_duration_us") for n in ("compute_input", "compute_infer", "compute_output"))
        / 1000 / success if success else None,
        "pending_requests": _total(after, "nv_inference_pending_request_count", **sel),
        "batch_efficiency": inferences / executions if executions else None,
    }
    buckets: dict[float, float] = {}
    for s in after:
        if s.name == f"{HISTOGRAM}_bucket" and s.labels.get("model") == model and s.labels.get("version") == version:
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
    for s in before:
        if s.name == f"{HISTOGRAM}_bucket" and s.labels.get("model") == model and s.labels.get("version") == version:
            buckets[float(s.labels["le"])] -= s.value
    for q in QUANTILES:
        value = histogram_quantile(q, buckets)
        out[f"p{round(q * 100)}_compute_ms"] = None if value is None else value * 1000
        summaries = [s.value for s in after if s.name == "nv_inference_request_summary_us"
                     and s.labels.get("model") == model and s.labels.get("version") == version
                     and float(s.labels.get("quantile", "nan")) == q and not math.isnan(s.value)]
        out[f"p{round(q * 100)}_request_ms"] = max(summaries) / 1000 if summaries else None
    return out


def failures_by_reason(before: list[Sample], after: list[Sample], model: str, version: str) -> dict[str, float]:
    reasons = {s.labels.get("reason", "") for s in after if s.name == "nv_inference_request_failure"}
    out = {}
    for reason in sorted(reasons):
        match = {"model": model, "version": version, "reason": reason}
        value = _total(after, "nv_inference_request_failure", **match) - _total(before, "nv_inference_request_failure", **match)
        if value:
            out[reason] = value
    return out


def server_figures(after: list[Sample]) -> dict[str, float | None]:
    def gauge(name: str, how: str) -> float | None:
        values = [s.value for s in after if s.name == name]
        if not values:
            return None
        return sum(values) / len(values) if how == "avg" else sum(values)

    return {
        "gpu_utilization": gauge("nv_gpu_utilization", "avg"),
        "gpu_memory_used_bytes": gauge("nv_gpu_memory_used_bytes", "sum"),
        "gpu_memory_total_bytes": gauge("nv_gpu_memory_total_bytes", "sum"),
        "gpu_power_watts": gauge("nv_gpu_power_usage", "sum"),
        "cpu_utilization": gauge("nv_cpu_utilization", "avg"),
        "cpu_memory_used_bytes": gauge("nv_cpu_memory_used_bytes", "sum"),
    }


def models_seen(samples: list[Sample]) -> list[str]:
    return sorted({s.labels["model"] for s in samples if s.name == "nv_inference_count" and "model" in s.labels})


def versions_seen(samples: list[Sample], model: str) -> list[str]:
    return sorted({s.labels["version"] for s in samples if s.name == "nv_inference_count" and s.labels.get("model") == model},
                  key=lambda v: int(v) if v.isdigit() else 0)
