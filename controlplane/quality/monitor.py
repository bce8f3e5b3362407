"""`mlctl monitor report`: per version and window, quality from predictions joined with feedback, data and
prediction drift against the version's reference sample, concept drift over sub-windows, feedback coverage.

The join runs in DuckDB over Arrow tables read from the prediction log (local or S3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np

from controlplane.quality.classification import classification_report
from controlplane.quality.drift import ConceptDriftRule, feature_drift, prediction_drift

REFERENCE = "reference.npz"  # in a version's folder: features, predicted, labels (optional)


@dataclass(frozen=True)
class Reference:
    features: np.ndarray  # N x F
    predicted: np.ndarray  # N
    labels: np.ndarray | None
    accuracy: float | None


@dataclass(frozen=True)
class MonitorOptions:
    model: str
    version: str | None = None
    window_s: float = 3600.0
    windows: int = 6  # sub-windows for concept drift
    rule: ConceptDriftRule = field(default_factory=ConceptDriftRule)
    psi_threshold: float = 0.2
    ks_alpha: float = 0.01
    chi_alpha: float = 0.01
    now: datetime | None = None


JOIN = """
WITH labels AS (
    SELECT prediction_id, arg_max(label, time) AS label, max(time) AS label_time FROM feedback GROUP BY prediction_id
)
SELECT p.version, p.time, p.features, p.predicted, l.label, l.label_time
FROM predictions p LEFT JOIN labels l USING (prediction_id)
WHERE p.model = $model AND p.time >= $since AND p.status = 'ok'
ORDER BY p.time
"""


def joined(predictions, feedback, model: str, since: datetime):
    """Predictions of `model` since `since`, each with its latest label (or none), as Arrow."""
    import duckdb

    con = duckdb.connect()
    con.register("predictions", predictions)
    con.register("feedback", feedback)
    result = con.execute(JOIN, {"model": model, "since": since})
    return result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.fetch_arrow_table()  # DuckDB 2 / 1


def _delay_stats(times, label_times) -> dict:
    delays = [(l - t).total_seconds() for t, l in zip(times, label_times) if l is not None]
    if not delays:
        return {"median_s": None, "p90_s": None}
    return {"median_s": float(np.median(delays)), "p90_s": float(np.percentile(delays, 90))}


def version_report(rows: dict, reference: Reference | None, options: MonitorOptions, since: datetime, now: datetime) -> dict:
    labelled = [i for i, label in enumerate(rows["label"]) if label is not None]
    y_true = np.array([rows["label"][i] for i in labelled], dtype=np.int64)
    y_pred = np.array([rows["predicted"][i] for i in labelled], dtype=np.int64)
    classes = sorted(set(y_true.tolist()) | set(y_pred.tolist()) | (set(reference.predicted.tolist()) if reference else set()))
    quality = classification_report(y_true, y_pred, labels=classes) if labelled else None
    out: dict = {
        "predictions": len(rows["time"]),
        "labelled": len(labelled),
        "coverage": len(labelled) / len(rows["time"]) if rows["time"] else None,
        "label_delay": _delay_stats(rows["time"], rows["label_time"]),
        "quality": quality.to_dict() if quality else None,
        "reference_accuracy": reference.accuracy if reference else None,
    }
    if reference is not None and rows["time"]:
        features = np.array(rows["features"], dtype=float)
        names = [f"f{i}" for i in range(features.shape[1])]
        drift = feature_drift(names, reference.features, features, options.psi_threshold, options.ks_alpha)
        out["data_drift"] = {"features": [d.to_dict() for d in drift], "drifted": [d.feature for d in drift if d.drifted]}
        predicted = np.array([p for p in rows["predicted"] if p is not None], dtype=np.int64)
        out["prediction_drift"] = prediction_drift(reference.predicted, predicted, classes, options.chi_alpha).to_dict() if len(predicted) else None
    # concept drift: accuracy per sub-window, judged against the reference by the documented rule
    edges = [since + (now - since) * i / options.windows for i in range(options.windows + 1)]
    windows = []
    for start, end in zip(edges, edges[1:]):
        idx = [i for i in labelled if start <= rows["time"][i] < end]
        accuracy = float(np.mean([rows["label"][i] == rows["predicted"][i] for i in idx])) if idx else None
        verdict = options.rule.judge(reference.accuracy, accuracy, len(idx)) if reference and reference.accuracy is not None \
            else "no reference accuracy"
        windows.append({"start": start.isoformat(), "end": end.isoformat(), "labelled": len(idx), "accuracy": accuracy, "verdict": verdict})
    out["concept_drift"] = {"rule": f"drift when a window with at least {options.rule.min_labelled} labels is more than "
                                    f"{options.rule.max_drop:.0%} below the reference accuracy",
                            "windows": windows, "drifted": any(w["verdict"] == "drift" for w in windows)}
    return out


def build_report(predictions, feedback, references: dict[str, Reference | None], options: MonitorOptions) -> dict:
    now = options.now or datetime.now(timezone.utc)
    since = now - timedelta(seconds=options.window_s)
    table = joined(predictions, feedback, options.model, since)
    data = table.to_pydict()
    versions = sorted(set(data["version"]), key=lambda v: int(v) if v.isdigit() else 0)
    if options.version:
        versions = [v for v in versions if v == options.version]
    report = {"model": options.model, "window_s": options.window_s, "since": since.isoformat(), "until": now.isoformat(), "versions": {}}
    for version in versions:
        idx = [i for i, v in enumerate(data["version"]) if v == version]
        rows = {k: [data[k][i] for i in idx] for k in ("time", "features", "predicted", "label", "label_time")}
        report["versions"][version] = version_report(rows, references.get(version), options, since, now)
    return report


def breaches(report: dict, min_accuracy: float | None, max_drifted_features: int | None, min_coverage: float | None) -> list[str]:
    """What `monitor check` fails on."""
    found = []
    for version, body in report["versions"].items():
        quality = body.get("quality")
        if min_accuracy is not None and quality and quality["accuracy"] is not None and quality["accuracy"] < min_accuracy:
            found.append(f"version {version}: accuracy {quality['accuracy']:.4f} below {min_accuracy}")
        drifted = (body.get("data_drift") or {}).get("drifted", [])
        if max_drifted_features is not None and len(drifted) > max_drifted_features:
            found.append(f"version {version}: {len(drifted)} drifted features ({', '.join(drifted[:8])})")
        if body.get("concept_drift", {}).get("drifted"):
            found.append(f"version {version}: concept drift ({body['concept_drift']['rule']})")
        if (body.get("prediction_drift") or {}).get("drifted"):
            found.append(f"version {version}: prediction drift (chi-square p={body['prediction_drift']['pvalue']:.2g})")
        if min_coverage is not None and body["coverage"] is not None and body["coverage"] < min_coverage:
            found.append(f"version {version}: feedback coverage {body['coverage']:.2%} below {min_coverage:.0%}")
    return found
