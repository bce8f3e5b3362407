"""The monitor checks that need no labels, each passed, breached or NOT MADE (see `checks.py`)."""

from __future__ import annotations

from controlplane.quality.checks import (
    BREACHED,
    NO_DATA,
    NO_REFERENCE,
    NOT_MADE,
    PASSED,
)


def data_quality(add, version: str, body: dict, maximum: int) -> None:
    quality = body.get("data_quality")
    if quality is None or quality["not_made"]:
        add("data quality", version, NOT_MADE, (quality or {}).get("not_made") or "no reference sample", NO_REFERENCE)
        return
    rows = {r["feature"]: r for r in quality["features"]}
    flagged = [f"{name}: {'; '.join(rows[name]['issues'])}" for name in quality["flagged"]]
    status = BREACHED if len(flagged) > maximum else PASSED
    add("data quality", version, status, f"{len(flagged)} flagged features of {len(rows)} (maximum {maximum})"
                                         + (f": {', '.join(flagged[:8])}" if flagged else ""))


def multivariate(add, version: str, body: dict) -> None:
    drift = body.get("multivariate_drift")
    if drift is None or drift["not_made"]:
        add("multivariate drift", version, NOT_MADE, (drift or {}).get("not_made") or "no reference sample", NO_REFERENCE)
        return
    pca, classifier = drift["pca"], drift["domain_classifier"]
    parts = []
    if not pca["not_made"]:
        parts.append(f"PCA reconstruction error {pca['error']:.4f} (threshold {pca['threshold']:.4f})")
    if not classifier["not_made"]:
        parts.append(f"domain classifier AUROC {classifier['auroc']:.3f} (threshold {classifier['threshold']:.3f})")
    add("multivariate drift", version, BREACHED if drift["drifted"] else PASSED, "; ".join(parts))


def estimated_accuracy(add, version: str, body: dict, max_drop: float) -> None:
    estimated, reference = body.get("estimated") or {}, body.get("reference_accuracy")
    if estimated.get("not_made") or estimated.get("accuracy") is None:
        add("estimated accuracy", version, NOT_MADE, estimated.get("not_made") or "no prediction to estimate from",
            NO_REFERENCE if estimated.get("not_made") else NO_DATA)
        return
    if reference is None:
        add("estimated accuracy", version, NOT_MADE, "the reference sample has no accuracy to compare with", NO_REFERENCE)
        return
    value, (low, high) = estimated["accuracy"], estimated["band"]
    realised = estimated.get("realised")
    beside = f"; realised {realised:.4f} over {estimated['labelled']} labels" if realised is not None else "; no labels yet"
    status = BREACHED if value < reference - max_drop else PASSED
    add("estimated accuracy", version, status, f"estimated {value:.4f} [{low:.4f}, {high:.4f}] against reference "
                                               f"{reference:.4f} (maximum drop {max_drop}){beside}")


def output_drift(add, version: str, body: dict) -> None:
    drift = body.get("embedding_drift")
    if drift is None or drift["not_made"]:
        add("output drift", version, NOT_MADE, (drift or {}).get("not_made") or "no output vectors", NO_REFERENCE)
        return
    votes = ", ".join(f"{m['method']}: {'drift' if m['drifted'] else 'ok'}" for m in drift["methods"] if not m["not_made"])
    add("output drift", version, BREACHED if drift["drifted"] else PASSED, f"{drift['dimensions']}-dimensional {drift.get('source', 'outputs')} ({votes})")
