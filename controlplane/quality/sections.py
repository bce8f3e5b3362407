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
    if calibrator.softmax:
        method = method.replace("scores calibrated", "scores (logits: softmax first) calibrated")
    q = calibrator.probabilities(outputs)
    predicted, labelled = c["predicted"], c["labelled"]
    correct = c["label"] == predicted
    rows = np.arange(len(predicted))
    p_right = np.where(predicted >= 0, q[rows, np.clip(predicted, 0, q.shape[1] - 1)], 0.0)
    overall = estimate(q, predicted)
    windows = []
    bounds = np.searchsorted(c["time"], edges, side="left")  # the window's rows are in time order: slices, no masks
    for (start, end), (lo, hi) in zip(pairwise(edges), pairwise(bounds)):
        part = estimate(q[lo:hi], predicted[lo:hi])
        labels = int(labelled[lo:hi].sum())
        windows.append({"start": _iso(start), "end": _iso(end), "predictions": part["rows"], "estimated": part["accuracy"],
                        "band": part["band"], "labelled": labels,
                        "realised": float(correct[lo:hi][labelled[lo:hi]].mean()) if labels else None})
    realised = float(correct[labelled].mean()) if labelled.any() else None
    return {"method": method, "not_made": None, **overall, "realised": realised, "labelled": int(labelled.sum()),
            "windows": windows, "calibration": reference_check(calibrator, reference)}, p_right


def multivariate(features: np.ndarray, reference) -> dict:
    pca = PcaReconstruction(reference.features).judge(features)
    classifier = domain_classifier(reference.features, features)
    made = [m for m in (pca, classifier) if not m["not_made"]]
    return {"pca": pca, "domain_classifier": classifier, "drifted": any(m["drifted"] for m in made),
            "not_made": None if made else "; ".join(m["not_made"] for m in (pca, classifier))}


def output_vectors(c: dict, reference, embedding: str | None) -> dict:
    """Drift of the declared embedding output (`--embedding-output`), else of the first output's vectors."""
    if embedding:
        source = f"output {embedding!r}"
        ref, cur = (reference.embeddings.get(embedding) if reference is not None else None), c.get("embedding")
        if ref is None:
            gap = f"the reference sample has no embedding_{embedding} array (the output's values for its features)"
        elif cur is None:
            gap = f"the logged predictions carry no output {embedding!r} on every row (the gateway logs the outputs after the first)"
        else:
            gap = None if cur.shape[1] == ref.shape[1] else f"the log's {embedding!r} has {cur.shape[1]} values, the reference's {ref.shape[1]}"
    else:
        source, ref, cur = "outputs", getattr(reference, "outputs", None), c.get("outputs")
        gap = None if ref is not None and cur is not None and cur.shape[1] == ref.shape[1] else \
            "the reference or the log has no output vectors of the same width"
    if gap is None and not len(cur):
        gap = "no predictions"
    if gap:
        return {"source": source, "drifted": False, "not_made": gap}
    sample = cur[even_rows(len(cur), defaults.MONITOR_SAMPLE_ROWS)]
    return {"source": source, **embedding_drift(ref, sample), "sampled": len(sample)}


def sections(c: dict, reference, edges: list[float], segment_feature: str | None, embedding: str | None = None) -> dict:
    features = c["features"]
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
    out["embedding_drift"] = output_vectors(c, reference, embedding)
    out["segments"] = worst_slices(c, p_right, segment_feature, reference.features if comparable else None)
    return out
