"""The parts of a version's report that need no labels: estimated performance (CBPE), data quality,
multivariate drift, drift of the output vectors, and the worst slices. Each says `not_made` (why) when it
could not be computed, never a made-up figure."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

import numpy as np

from controlplane import defaults
from controlplane.quality.data_quality import feature_quality
from controlplane.quality.estimate import (
    calibration_gap,
    estimate,
    fit_calibrator,
    reference_check,
)
from controlplane.quality.multivariate import (
    PcaReconstruction,
    domain_classifier,
    embedding_drift,
)
from controlplane.quality.segments import worst_slices
from controlplane.quality.window import even_rows


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def estimated_performance(c: dict, reference, edges: list[float]) -> tuple[dict, np.ndarray | None]:
    """The estimate over the window and per sub-window, realised beside it where labels exist; and each
    prediction's calibrated probability of being right (for the slices)."""
    outputs = c.get("outputs")
    gap = calibration_gap(reference, outputs.shape[1] if outputs is not None else None)
    if gap is None and outputs is None:
        gap = "the logged predictions carry no outputs (scores) to estimate from"
    method = "CBPE: the model's scores calibrated on the reference (one-vs-rest isotonic), expected confusion matrix"
    if gap:
        return {"method": method, "not_made": gap, "accuracy": None, "band": None, "classes": [], "windows": []}, None
    calibrator = fit_calibrator(reference.outputs, reference.labels)
    q = calibrator.probabilities(outputs)
    predicted, labelled = c["predicted"], c["labelled"]
    correct = c["label"] == predicted
    rows = np.arange(len(predicted))
    p_right = np.where(predicted >= 0, q[rows, np.clip(predicted, 0, q.shape[1] - 1)], 0.0)
    overall = estimate(q, predicted)
    windows = []
    for start, end in pairwise(edges):
        mask = (c["time"] >= start) & (c["time"] < end)
        part = estimate(q[mask], predicted[mask])
        labels = int((mask & labelled).sum())
        windows.append({"start": _iso(start), "end": _iso(end), "predictions": part["rows"], "estimated": part["accuracy"],
                        "band": part["band"], "labelled": labels,
                        "realised": float(correct[mask & labelled].mean()) if labels else None})
    realised = float(correct[labelled].mean()) if labelled.any() else None
    return {"method": method, "not_made": None, **overall, "realised": realised, "labelled": int(labelled.sum()),
            "windows": windows, "calibration": reference_check(calibrator, reference)}, p_right


def multivariate(features: np.ndarray, reference) -> dict:
    pca = PcaReconstruction(reference.features).judge(features)
    classifier = domain_classifier(reference.features, features)
    made = [m for m in (pca, classifier) if not m["not_made"]]
    return {"pca": pca, "domain_classifier": classifier, "drifted": any(m["drifted"] for m in made),
            "not_made": None if made else "; ".join(m["not_made"] for m in (pca, classifier))}


def sections(c: dict, reference, edges: list[float], segment_feature: str | None) -> dict:
    features, outputs = c["features"], c.get("outputs")
    comparable = reference is not None and features is not None and features.shape[1] == reference.features.shape[1]
    no_reference = "the version has no reference sample (publish it with --reference)" if reference is None else \
        "the logged features do not fit the reference's"
    estimated, p_right = estimated_performance(c, reference, edges)
    out: dict = {"estimated": estimated}
    if comparable and len(features):
        names = [f"f{i}" for i in range(features.shape[1])]
        out["data_quality"] = {**feature_quality(names, reference.features, features), "not_made": None}
        sample = features[even_rows(len(features), defaults.MONITOR_SAMPLE_ROWS)]
        out["multivariate_drift"] = {**multivariate(sample, reference), "sampled": len(sample)}
    else:
        out["data_quality"] = {"features": [], "flagged": [], "not_made": no_reference}
        out["multivariate_drift"] = {"drifted": False, "not_made": no_reference}
    ref_outputs = getattr(reference, "outputs", None)
    if ref_outputs is not None and outputs is not None and outputs.shape[1] == ref_outputs.shape[1] and len(outputs):
        sample = outputs[even_rows(len(outputs), defaults.MONITOR_SAMPLE_ROWS)]
        out["embedding_drift"] = {"source": "outputs", **embedding_drift(ref_outputs, sample), "sampled": len(sample)}
    else:
        out["embedding_drift"] = {"source": "outputs", "drifted": False,
                                  "not_made": "the reference or the log has no output vectors of the same width"}
    out["segments"] = worst_slices(c, p_right, segment_feature, reference.features if comparable else None)
    return out
