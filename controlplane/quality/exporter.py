"""Quality and drift figures as Prometheus gauges (`mlctl monitor export`), recomputed from the log at
most once per interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

QUALITY_METRICS = {
    "mlctl_quality_accuracy": "Accuracy of labelled predictions in the window",
    "mlctl_quality_reference_accuracy": "Accuracy of the version's reference sample",
    "mlctl_quality_class_f1": "F1 per class in the window",
    "mlctl_quality_class_precision": "Precision per class in the window",
    "mlctl_quality_class_recall": "Recall per class in the window",
    "mlctl_quality_predictions": "Logged predictions in the window",
    "mlctl_quality_feedback_coverage": "Share of logged predictions with a label",
    "mlctl_quality_label_delay_seconds": "Median delay between a prediction and its label",
    "mlctl_drift_features_drifted": "Features whose PSI and KS test both flag drift",
    "mlctl_drift_psi_max": "Largest PSI over the features",
    "mlctl_drift_prediction_pvalue": "Chi-square p-value of the class distribution against the reference",
    "mlctl_drift_concept": "1 when a window breaks the concept-drift rule",
    "mlctl_quality_estimated_accuracy": "Accuracy estimated without labels (CBPE on the reference's calibrated scores)",
    "mlctl_quality_estimated_accuracy_lower": "Lower end of the estimated accuracy's 95% band",
    "mlctl_data_quality_flagged_features": "Features flagged by the data-quality checks (missing, out of range, unseen, constant)",
    "mlctl_drift_multivariate": "1 when PCA reconstruction error or the domain classifier flags multivariate drift",
    "mlctl_drift_domain_auroc": "Cross-validated AUROC of a classifier telling the window from the reference (0.5: alike)",
    "mlctl_drift_pca_error_ratio": "PCA reconstruction error of the window over its threshold (above 1: drift)",
    "mlctl_drift_outputs": "1 when the output vectors drift (majority of domain classifier, drifted components, MMD)",
}


def samples(report: dict) -> list[tuple[str, dict, float]]:
    """(metric, labels, value) for every figure of a monitor report that has a value."""
    out: list[tuple[str, dict, float]] = []
    model = report["model"]
    for version, body in report["versions"].items():
        out.extend(_version_samples({"model": model, "version": version}, body))
    return out


def _version_samples(base: dict, body: dict) -> list[tuple[str, dict, float]]:
    """A figure that could not be computed (None) has no sample: an absent gauge, never a made-up 0."""
    out: list[tuple[str, dict, float]] = []

    def put(name: str, value, **extra) -> None:
        if value is not None:
            out.append((name, {**base, **extra}, float(value)))

    quality = body.get("quality") or {}
    put("mlctl_quality_accuracy", quality.get("accuracy"))
    put("mlctl_quality_reference_accuracy", body.get("reference_accuracy"))
    for c in quality.get("classes", []):
        put("mlctl_quality_class_f1", c["f1"], **{"class": str(c["label"])})
        put("mlctl_quality_class_precision", c["precision"], **{"class": str(c["label"])})
        put("mlctl_quality_class_recall", c["recall"], **{"class": str(c["label"])})
    put("mlctl_quality_predictions", body["predictions"])
    put("mlctl_quality_feedback_coverage", body.get("coverage"))
    put("mlctl_quality_label_delay_seconds", body["label_delay"]["median_s"])
    drift = body.get("data_drift")
    if drift and not drift["not_made"]:
        put("mlctl_drift_features_drifted", len(drift["drifted"]))
        put("mlctl_drift_psi_max", max((f["psi"] for f in drift["features"] if f["psi"] is not None), default=None))
    if body.get("prediction_drift"):
        put("mlctl_drift_prediction_pvalue", body["prediction_drift"]["pvalue"])
    if body["concept_drift"]["status"] != "not made":
        put("mlctl_drift_concept", 1.0 if body["concept_drift"]["drifted"] else 0.0)
    _unlabelled_samples(put, body)
    return out


def _unlabelled_samples(put, body: dict) -> None:
    estimated = body.get("estimated") or {}
    if not estimated.get("not_made") and estimated.get("accuracy") is not None:
        put("mlctl_quality_estimated_accuracy", estimated["accuracy"])
        put("mlctl_quality_estimated_accuracy_lower", estimated["band"][0])
    quality = body.get("data_quality") or {}
    if quality and not quality.get("not_made"):
        put("mlctl_data_quality_flagged_features", len(quality["flagged"]))
    multivariate = body.get("multivariate_drift") or {}
    if multivariate and not multivariate.get("not_made"):
        put("mlctl_drift_multivariate", 1.0 if multivariate["drifted"] else 0.0)
        put("mlctl_drift_domain_auroc", multivariate["domain_classifier"].get("auroc"))
        pca = multivariate["pca"]
        put("mlctl_drift_pca_error_ratio", pca["error"] / pca["threshold"] if pca.get("error") is not None and pca["threshold"] else None)
    outputs = body.get("embedding_drift") or {}
    if outputs and not outputs.get("not_made"):
        put("mlctl_drift_outputs", 1.0 if outputs["drifted"] else 0.0)


class QualityCollector:
    """A prometheus_client collector over `compute()` (a monitor report), cached for `interval_s`."""

    def __init__(self, compute: Callable[[], dict], interval_s: float = 60.0) -> None:
        self.compute, self.interval_s = compute, interval_s
        self._cached: tuple[float, list] | None = None
        self._lock = threading.Lock()

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self.interval_s:
                self._cached = (time.monotonic(), samples(self.compute()))
            current = self._cached[1]
        families: dict[str, tuple[GaugeMetricFamily, list[str]]] = {}
        for name, labels, value in current:
            if name not in families:
                families[name] = (GaugeMetricFamily(name, QUALITY_METRICS[name], labels=list(labels)), list(labels))
            family, keys = families[name]
            family.add_metric([labels[k] for k in keys], value)
        yield from (family for family, _ in families.values())


def render_text(report: dict) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(QualityCollector(lambda: report, interval_s=float("inf")))
    return generate_latest(registry).decode()
