"""The gateway's Prometheus registry: requests, latency, and the prediction log's and canary reader's faults.

Model label values come only from models Triton knows; any other name in a URL counts as UNKNOWN_MODEL, so a
client cannot grow the number of series.
"""

from __future__ import annotations

from collections.abc import Callable

UNKNOWN_MODEL = "_unknown"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class GatewayMetrics:
    def __init__(self, log_figures: Callable[[], tuple[int, int] | None]) -> None:
        """`log_figures()`: the prediction log's (dropped records, failed segment writes), None without a log."""
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mlctl_gateway_requests", "Gateway requests", ["route", "model", "version", "status"],
                                registry=self.registry)
        self.latency = Histogram("mlctl_gateway_request_duration_seconds", "Gateway request time", ["route", "model", "version"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.canary_state_errors = Counter("mlctl_gateway_canary_state_errors",
                                           "Canary state reads that failed (routing kept the last known state)",
                                           ["model"], registry=self.registry)
        self.registry.register(_LogCollector(log_figures))
        self._children: dict[tuple[str, str, str, str], tuple] = {}  # label lookups done once per label set

    def observe(self, route: str, model: str, version: str, status: str, seconds: float) -> None:
        key = (route, model, version, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.requests.labels(*key), self.latency.labels(route, model, version))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LogCollector:
    """Read at scrape time from the log's own counts, so no figure is copied and none goes stale."""

    def __init__(self, figures: Callable[[], tuple[int, int] | None]) -> None:
        self.figures = figures

    def describe(self):
        return []  # no samples at registration: the log may not exist yet

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        figures = self.figures()
        dropped, write_errors = figures if figures is not None else (0, 0)
        yield GaugeMetricFamily("mlctl_gateway_log_dropped", "Log records dropped (queue full or write failed)", value=dropped)
        yield CounterMetricFamily("mlctl_gateway_log_write_errors", "Prediction log segments that could not be written",
                                  value=write_errors)
