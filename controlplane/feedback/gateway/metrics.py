"""The gateway's Prometheus registry: requests, latency, and the prediction log's and canary reader's faults.

Model label values come only from models Triton knows; any other name in a URL counts as UNKNOWN_MODEL, so a
client cannot grow the number of series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

UNKNOWN_MODEL = "_unknown"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class GatewayMetrics:
    def __init__(self, log_figures: Callable[[], tuple[int, int] | None],
                 security_events: Callable[[], dict[tuple[str, str], int]] | None = None) -> None:
        """`log_figures()`: the prediction log's (dropped records, failed segment writes), None without a log.
        `security_events()`: the repository's security events, {(kind, reason): count} (signature refusals, tampering)."""
        from prometheus_client import CollectorRegistry, Counter

        self.registry = CollectorRegistry()
        self._requests = _RequestsCollector()  # requests and their latency: plain counts on the request path
        self.registry.register(self._requests)
        self.observe, self.count = self._requests.observe, self._requests.count
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

    def watch_coalescing(self, by_model: dict[str, list[int]]) -> None:
        """Export the coalescer's counts (model -> [requests taken, Triton requests made]), read at scrape time."""
        self.registry.register(_CoalescingCollector(by_model))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _RequestsCollector:
    """mlctl_gateway_requests_total{route, model, version, status} and the mlctl_gateway_request_duration_seconds
    histogram{route, model, version}, kept as plain counts that the event loop's thread adds to (a list index and an
    add per request, no lock: it is the only writer) and read into metric families at scrape time, on that same
    thread. prometheus_client's Counter and Histogram took a lock per increment, three per request."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str, str, str], list[int]] = {}
        self._latency: dict[tuple[str, str, str], list[float]] = {}  # per bucket, then +Inf, then the sum

    def observe(self, route: str, model: str, version: str, status: str, seconds: float) -> None:
        self.count(route, model, version, status)
        key = (route, model, version)
        counts = self._latency.get(key)
        if counts is None:
            counts = self._latency[key] = [0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
        counts[-1] += seconds

    def count(self, route: str, model: str, version: str, status: str) -> None:
        key = (route, model, version, status)
        count = self._requests.get(key)
        if count is None:
            count = self._requests[key] = [0]
        count[0] += 1

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        requests = CounterMetricFamily("mlctl_gateway_requests", "Gateway requests", labels=["route", "model", "version", "status"])
        for key, (count,) in list(self._requests.items()):
            requests.add_metric(list(key), count)
        yield requests
        latency = HistogramMetricFamily("mlctl_gateway_request_duration_seconds", "Gateway request time",
                                        labels=["route", "model", "version"])
        for key, counts in list(self._latency.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(floatToGoString, LATENCY_BUCKETS), "+Inf"), counts[:-1]):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric(list(key), buckets, counts[-1])
        yield latency


class _CoalescingCollector:
    """With --coalesce: the requests that went through the coalescer and the Triton requests made for them, per
    model. Their ratio is the mean group size; the second is what Triton's nv_inference_request_success counts."""

    def __init__(self, by_model: dict[str, list[int]]) -> None:
        self.by_model = by_model

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        taken = CounterMetricFamily("mlctl_gateway_coalesced_requests", "Requests sent to Triton in groups (--coalesce)",
                                    labels=["model"])
        sent = CounterMetricFamily("mlctl_gateway_coalesced_triton_requests", "Triton requests made for them", labels=["model"])
        for model, (requests, triton_requests) in sorted(self.by_model.items()):
            taken.add_metric([model], requests)
            sent.add_metric([model], triton_requests)
        yield taken
        yield sent


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
