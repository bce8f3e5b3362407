"""The gateway's Prometheus registry: requests, latency, and the prediction log's and canary reader's faults.

Model label values come only from models Triton knows; any other name in a URL counts as UNKNOWN_MODEL, so a
client cannot grow the number of series.
"""

from __future__ import annotations

from collections.abc import Callable

UNKNOWN_MODEL = "_unknown"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class GatewayMetrics:
    def __init__(self, log_figures: Callable[[], tuple[int, int] | None],
                 security_events: Callable[[], dict[tuple[str, str], int]] | None = None) -> None:
        """`log_figures()`: the prediction log's (dropped records, failed segment writes), None without a log.
        `security_events()`: the repository's security events, {(kind, reason): count} (signature refusals, tampering)."""
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
        # security: refusals by the gateway itself (the key's id, a digest, never the key)
        self.auth_failures = Counter("mlctl_security_auth_failures", "Requests refused for their API key",
                                     ["service", "reason"], registry=self.registry)
        self.refused_control = Counter("mlctl_security_refused_control_calls", "Admin-scope calls refused",
                                       ["service", "route"], registry=self.registry)
        self.rate_limited = Counter("mlctl_security_rate_limited", "Requests refused (429) over their key's rate",
                                    ["service", "key"], registry=self.registry)
        self.oversized = Counter("mlctl_security_oversized_requests", "Requests refused (413) over their key's body cap",
                                 ["service", "key"], registry=self.registry)
        if security_events is not None:
            self.registry.register(_EventsCollector(security_events))
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


class _EventsCollector:
    """The repository's security events, read at scrape time: counted where they happened (a promote refused by
    the signature policy, a replica that found a tampered file), the same figures whichever gateway is asked."""

    def __init__(self, counts: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.counts = counts

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("mlctl_security_events", "Security events recorded in the model repository",
                                     labels=["kind", "reason"])
        for (kind, reason), count in sorted(self.counts().items()):
            family.add_metric([kind, reason], count)
        yield family
