"""The worst slices of a window (as Arize ranks them): by predicted class, or by bins of a declared input
feature (the reference's quintiles). Each slice has its estimated accuracy (when the scores could be
calibrated) and its realised accuracy over the labels it has; the worst come first."""

from __future__ import annotations

import numpy as np

BINS = 5
SHOWN = 5  # slices listed, worst first
MIN_ROWS = 20  # a slice with fewer predictions is listed but never ranked worst


def _slices(names: list[str], groups: np.ndarray, p_right: np.ndarray | None, correct: np.ndarray, labelled: np.ndarray) -> list[dict]:
    """One row per name: `groups` holds each prediction's slice (0..len(names)-1, or -1 in none). Counted with
    one bincount per figure over the window, not one mask per slice (a million rows, ten classes)."""
    size = len(names)
    inside = groups >= 0
    where, right, ok = groups[inside], labelled[inside], correct[inside]
    counts = np.bincount(where, minlength=size)
    labels = np.bincount(where[right], minlength=size)
    hits = np.bincount(where[right], weights=ok[right], minlength=size)
    estimated = np.bincount(where, weights=p_right[inside], minlength=size) if p_right is not None else None
    return [{"slice": name, "predictions": int(counts[k]), "labelled": int(labels[k]),
             "estimated_accuracy": float(estimated[k] / counts[k]) if estimated is not None and counts[k] else None,
             "realised_accuracy": float(hits[k] / labels[k]) if labels[k] else None} for k, name in enumerate(names)]


def _rank(slices: list[dict]) -> list[dict]:
    def key(s: dict) -> tuple:
        value = s["estimated_accuracy"] if s["estimated_accuracy"] is not None else s["realised_accuracy"]
        return (s["predictions"] < MIN_ROWS, value if value is not None else 2.0)

    return sorted(slices, key=key)[:SHOWN]


def worst_slices(columns: dict, p_right: np.ndarray | None, feature: str | None, reference_features: np.ndarray | None) -> dict:
    """`p_right`: each prediction's calibrated probability of being right (None without calibration).
    `feature`: "f<i>" to slice by that input as well as by predicted class."""
    predicted, labelled = columns["predicted"], columns["labelled"]
    correct = columns["label"] == predicted
    classes = np.unique(predicted[predicted >= 0])
    groups = np.searchsorted(classes, predicted)
    groups[predicted < 0] = -1
    by_class = _slices([f"predicted {c}" for c in classes], groups, p_right, correct, labelled)
    out = {"by_predicted_class": _rank(by_class), "feature": feature, "by_feature": None}
    features = columns["features"]
    if feature is None or features is None or reference_features is None:
        return out
    i = int(feature[1:])
    edges = np.unique(np.quantile(reference_features[:, i][np.isfinite(reference_features[:, i])], np.linspace(0, 1, BINS + 1)))
    values = features[:, i]
    bins = np.digitize(values, edges[1:-1]) if len(edges) > 2 else np.zeros(len(values), dtype=int)
    names = []
    for b in range(max(1, len(edges) - 1)):
        lo = "-inf" if b == 0 else f"{edges[b]:.3g}"
        hi = "inf" if b >= len(edges) - 2 else f"{edges[b + 1]:.3g}"
        names.append(f"{feature} in [{lo}, {hi})")
    names.append(f"{feature} missing")
    groups = np.where(np.isfinite(values), bins, len(names) - 1)
    slices = _slices(names, groups, p_right, correct, labelled)
    out["by_feature"] = _rank([s for s in slices if s["predictions"]])
    return out
