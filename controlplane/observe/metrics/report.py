"""`mlctl metrics`: per-version serving figures from Prometheus (default) or from Triton directly."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from controlplane.errors import NotFoundError, UnavailableError
from controlplane.observe.metrics import definitions as d
from controlplane.observe.metrics import direct

# (waited_s, total_s) while the direct source waits out its window; the CLI draws it on stderr.
Progress = Callable[[float, float], None]
PROGRESS_EVERY_S = 1.0


@dataclass
class VersionFigures:
    version: str
    figures: dict[str, float | None]
    failures_by_reason: dict[str, float]

    @property
    def idle(self) -> bool:
        """Loaded in the window, and no request reached it: zero traffic, the honest answer."""
        return not self.figures.get("success") and not self.figures.get("failures")


@dataclass
class MetricsReport:
    model: str
    window: str
    source: str  # "prometheus <url>" or "direct: <n> replica(s)"
    versions: list[VersionFigures]
    server: dict[str, float | None]
    sources: dict[str, str] = field(default_factory=dict)  # figure -> how it was computed

    def to_dict(self) -> dict:
        out = asdict(self)
        for row, version in zip(out["versions"], self.versions):
            row["idle"] = version.idle
        return out


def _by_number(versions) -> list[str]:
    return sorted(versions, key=lambda v: int(v) if v.isdigit() else 0)


def _require_version(version: str | None, known: list[str], model: str, where: str) -> None:
    if version is not None and version not in known:
        raise NotFoundError(f"version {version} of model {model!r} has no metrics {where} (versions with metrics: "
                            f"{', '.join(known)})", hint=f"a version has metrics once it is loaded; run 'mlctl model versions {model}'")


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
        """Figures per version over the window. NotFoundError for a model, or a version, without any series in
        the window; a version that was loaded but got no request reports zero traffic."""
        d.parse_window(window)
        where = f"in Prometheus at {self.url} over the last {window}"
        known = _by_number(r["metric"].get("version", "") for r in self._query(d.render(d.VERSIONS, d.selector(model), window)))
        if not known:
            models = sorted(r["metric"].get("model", "") for r in self._query(d.render(d.MODELS, "", window)))
            raise NotFoundError(f"no metrics for model {model!r} {where} (models with metrics: {', '.join(models) or 'none'})",
                                hint="is it loaded, and does Prometheus scrape its replicas?")
        _require_version(version, known, model, where)
        rows = []
        for v in [version] if version else known:
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

    def report(self, model: str, version: str | None, window: str, progress: Progress | None = None) -> MetricsReport:
        """Scrape, check that the model (and version) is loaded there, wait the window, scrape again. The check
        comes first, so a mistyped name fails at once, not after the window."""
        seconds = d.parse_window(window)
        before = self._scrape_all()
        where = f"at {', '.join(self.urls)}"
        if not direct.versions_seen(before, model):
            models = direct.models_seen(before)
            raise NotFoundError(f"no metrics for model {model!r} {where}: it is not loaded there "
                                f"(models loaded: {', '.join(models) or 'none'})", hint="check the name, or load the model")
        _require_version(version, direct.versions_seen(before, model), model, where)
        t0 = time.monotonic()
        if progress:
            progress(0.0, seconds)
        while (left := t0 + seconds - time.monotonic()) > 0:
            time.sleep(min(PROGRESS_EVERY_S, left))  # waiting out the window is the measurement itself
            if progress:
                progress(min(seconds, time.monotonic() - t0), seconds)
        after = self._scrape_all()
        elapsed = time.monotonic() - t0
        versions = [version] if version else direct.versions_seen(after, model)
        rows = [VersionFigures(v, direct.figures(before, after, elapsed, model, v), direct.failures_by_reason(before, after, model, v))
                for v in versions]
        how = f"direct: difference of two scrapes {elapsed:.1f} s apart, summed over {len(self.urls)} replica(s)"
        sources = {f.key: how for f in d.FIGURES}
        return MetricsReport(model, window, f"direct ({len(self.urls)} replica(s))", rows, direct.server_figures(after), sources)
