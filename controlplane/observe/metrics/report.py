"""`mlctl metrics`: per-version serving figures from Prometheus (default) or from Triton directly."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from controlplane.errors import NotFoundError, UnavailableError
from controlplane.observe.metrics import definitions as d
from controlplane.observe.metrics import direct


@dataclass
class VersionFigures:
    version: str
    figures: dict[str, float | None]
    failures_by_reason: dict[str, float]


@dataclass
class MetricsReport:
    model: str
    window: str
    source: str  # "prometheus <url>" or "direct: <n> replica(s)"
    versions: list[VersionFigures]
    server: dict[str, float | None]
    sources: dict[str, str] = field(default_factory=dict)  # figure -> how it was computed

    def to_dict(self) -> dict:
        return asdict(self)


def _clean(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


class PrometheusSource:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def _query(self, promql: str) -> list[dict]:
        from prometheus_api_client import (
            PrometheusApiClientException,
            PrometheusConnect,
        )
        from requests.exceptions import RequestException

        try:
            return PrometheusConnect(url=self.url, disable_ssl=True).custom_query(promql, params={"timeout": f"{int(self.timeout_s)}s"})
        except RequestException as exc:
            raise UnavailableError(f"Prometheus at {self.url} is not reachable: {exc}", hint="pass --prometheus-url or use --source direct") from exc
        except PrometheusApiClientException as exc:
            raise UnavailableError(f"Prometheus at {self.url} refused the query: {exc}") from exc

    def scalar(self, promql: str) -> float | None:
        result = self._query(promql)
        return _clean(result[0]["value"][1]) if result else None

    def report(self, model: str, version: str | None, window: str) -> MetricsReport:
        d.parse_window(window)
        versions = [version] if version else sorted(
            (r["metric"].get("version", "") for r in self._query(d.render(d.VERSIONS, d.selector(model), window))),
            key=lambda v: int(v) if v.isdigit() else 0,
        )
        if not versions:
            raise NotFoundError(f"Prometheus at {self.url} has no metrics for model {model!r}",
                                hint="is it loaded, and does Prometheus scrape its replicas?")
        rows = []
        for v in versions:
            sel = d.selector(model, v)
            figures = {f.key: self.scalar(d.render(f.promql, sel, window)) for f in d.FIGURES if f.per_version}
            reasons = {r["metric"].get("reason", ""): _clean(r["value"][1]) or 0.0
                       for r in self._query(d.render(d.FAILURES_BY_REASON, sel, window))}
            rows.append(VersionFigures(v, figures, {k: val for k, val in reasons.items() if val}))
        server = {f.key: self.scalar(f.promql) for f in d.FIGURES if not f.per_version}
        sources = {f.key: f"prometheus: {d.render(f.promql, d.selector(model, '<v>'), window)}" for f in d.FIGURES}
        return MetricsReport(model, window, f"prometheus {self.url}", rows, server, sources)


class DirectSource:
    """Scrapes every replica's /metrics at the start and the end of the window."""

    def __init__(self, metrics_urls: list[str]) -> None:
        if not metrics_urls:
            raise NotFoundError("no Triton metrics endpoints to scrape", hint="pass --metrics-url or start a server with 'mlctl server start'")
        self.urls = metrics_urls

    def _scrape_all(self) -> list[direct.Sample]:
        return [s for url in self.urls for s in direct.scrape(url)]

    def report(self, model: str, version: str | None, window: str, sleep=time.sleep) -> MetricsReport:
        seconds = d.parse_window(window)
        before = self._scrape_all()
        t0 = time.monotonic()
        sleep(seconds)
        after = self._scrape_all()
        elapsed = time.monotonic() - t0
        versions = [version] if version else direct.versions_seen(after, model)
        if not versions:
            raise NotFoundError(f"no metrics for model {model!r} at {', '.join(self.urls)}", hint="is the model loaded there?")
        rows = [VersionFigures(v, direct.figures(before, after, elapsed, model, v), direct.failures_by_reason(before, after, model, v))
                for v in versions]
        how = f"direct: difference of two scrapes {elapsed:.1f} s apart, summed over {len(self.urls)} replica(s)"
        sources = {f.key: how for f in d.FIGURES}
        return MetricsReport(model, window, f"direct ({len(self.urls)} replica(s))", rows, direct.server_figures(after), sources)
