"""Security counters, defined once: what `mlctl metrics security` shows, the security alert rules and the
dashboard's security row all take their PromQL from here.

The gateway counts its own refusals (each worker and each gateway its own: summed); the repository's security
events (signature refusals, tampering) are the same figures on every gateway that reads that repository (max).
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.observe.metrics import definitions as d
from controlplane.observe.metrics.direct import Sample, scrape


@dataclass(frozen=True)
class SecurityFigure:
    key: str
    title: str
    metric: str  # the counter's series name (with _total)
    label: str  # broken down by
    match: tuple[tuple[str, str], ...] = ()
    shared: bool = False  # the same count on every target (repository events): max, not sum

    @property
    def selector(self) -> str:
        return ",".join(f'{k}="{v}"' for k, v in self.match)

    def promql(self, window: str) -> str:
        how, series = ("max" if self.shared else "sum"), self.metric + (f"{{{self.selector}}}" if self.match else "")
        return f"{how} by ({self.label}) (increase({series}[{window}]))"

    def appeared(self, window: str) -> str:
        """Label values first counted within the window (increase() misses a counter's first sample)."""
        series = self.metric + (f"{{{self.selector}}}" if self.match else "")
        return f"(max by ({self.label}) ({series}) unless max by ({self.label}) ({series} offset {window}))"


FIGURES: tuple[SecurityFigure, ...] = (
    SecurityFigure("auth_failures", "Requests refused for their API key", "mlctl_security_auth_failures_total", "reason"),
    SecurityFigure("refused_control_calls", "Admin-scope (control) calls refused", "mlctl_security_refused_control_calls_total", "route"),
    SecurityFigure("rate_limited", "Requests over their key's rate (429)", "mlctl_security_rate_limited_total", "key"),
    SecurityFigure("oversized", "Requests over their key's body cap (413)", "mlctl_security_oversized_requests_total", "key"),
    SecurityFigure("signature_refused", "Versions refused by the signature policy", "mlctl_security_events_total", "reason",
                   (("kind", "signature_refused"),), shared=True),
    SecurityFigure("tampering_detected", "Versions changed after signing", "mlctl_security_events_total", "reason",
                   (("kind", "tampering_detected"),), shared=True),
)

BY_KEY = {f.key: f for f in FIGURES}


def from_prometheus(source, window: str) -> dict[str, dict[str, float]]:
    """{figure: {label value: increase over the window}} from a PrometheusSource."""
    d.parse_window(window)
    out: dict[str, dict[str, float]] = {}
    for figure in FIGURES:
        rows = source._query(figure.promql(window))
        out[figure.key] = {row["metric"].get(figure.label, ""): round(float(row["value"][1]), 3) for row in rows}
    return out


def totals(samples: list[Sample]) -> dict[str, dict[str, float]]:
    """{figure: {label value: count since start}} from scrapes of gateways (pure): summed across them, the
    repository's events taken once."""
    out: dict[str, dict[str, float]] = {}
    for figure in FIGURES:
        name = figure.metric.removesuffix("_total")
        values: dict[str, float] = {}
        for sample in samples:
            if sample.name != name or any(sample.labels.get(k) != v for k, v in figure.match):
                continue
            label = sample.labels.get(figure.label, "")
            values[label] = max(values.get(label, 0.0), sample.value) if figure.shared else values.get(label, 0.0) + sample.value
        out[figure.key] = values
    return out


def from_gateways(urls: list[str]) -> dict[str, dict[str, float]]:
    return totals([s for url in urls for s in scrape(url)])
