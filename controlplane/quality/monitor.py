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
    relation = con.sql(JOIN, params={"model": model, "since": since})
    return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()  # DuckDB 2 / 1


JOIN_ALL = """
WITH labels AS (
    SELECT prediction_id, arg_max(label, time) AS label FROM feedback GROUP BY prediction_id
)
SELECT p.version, p.status, p.latency_ms, p.predicted, l.label
FROM predictions p LEFT JOIN labels l USING (prediction_id)
WHERE p.model = $model AND p.time >= $since
"""


def joined_all(predictions, feedback, model: str, since: datetime):
    """Every logged request of `model` since `since` (failed ones too), with its latest label."""
    import duckdb

    con = duckdb.connect()
    con.register("predictions", predictions)
    con.register("feedback", feedback)
    relation = con.sql(JOIN_ALL, params={"model": model, "since": since})
    return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()


DRIFT_SAMPLE = 200_000  # drift statistics use at most this many predictions per version (an even sample)


def _columns(table) -> dict:
    """The joined rows of one version as numpy arrays (vectorised: a million rows stay fast)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    features = table["features"].combine_chunks() if n else pa.array([], pa.list_(pa.float64()))
    flat = features.flatten().to_numpy(zero_copy_only=False) if n else np.zeros(0)
    width = len(flat) // n if n else 0
    labels = table["label"]
    return {
        "time": table["time"].to_numpy().astype("datetime64[ms]").astype(np.int64) / 1000.0 if n else np.zeros(0),
        "features": flat.reshape(n, width) if n and width * n == len(flat) else None,
        "predicted": pc.fill_null(table["predicted"], -1).to_numpy(zero_copy_only=False),
        "label": pc.fill_null(labels, -1).to_numpy(zero_copy_only=False),
        "labelled": pc.is_valid(labels).to_numpy(zero_copy_only=False),
        "label_time": pc.fill_null(table["label_time"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()), 0).to_numpy(zero_copy_only=False) / 1000.0,
    }


def version_report(table, reference: Reference | None, options: MonitorOptions, since: datetime, now: datetime) -> dict:
    c = _columns(table)
    n = len(c["time"])
    labelled = c["labelled"]
    y_true, y_pred = c["label"][labelled], c["predicted"][labelled]
    seen = set(np.unique(y_true).tolist()) | set(np.unique(y_pred[y_pred >= 0]).tolist())
    classes = sorted(seen | (set(np.unique(reference.predicted).tolist()) if reference is not None else set()))
    quality = classification_report(y_true, y_pred, labels=classes) if labelled.any() else None
    delays = (c["label_time"] - c["time"])[labelled]
    out: dict = {
        "predictions": n,
        "labelled": int(labelled.sum()),
        "coverage": float(labelled.mean()) if n else None,
        "label_delay": {"median_s": float(np.median(delays)) if len(delays) else None,
                        "p90_s": float(np.percentile(delays, 90)) if len(delays) else None},
        "quality": quality.to_dict() if quality else None,
        "reference_accuracy": reference.accuracy if reference else None,
    }
    if reference is not None and n and c["features"] is not None:
        step = max(1, n // DRIFT_SAMPLE)
        features = c["features"][::step]
        names = [f"f{i}" for i in range(features.shape[1])]
        drift = feature_drift(names, reference.features, features, options.psi_threshold, options.ks_alpha)
        out["data_drift"] = {"features": [d.to_dict() for d in drift], "drifted": [d.feature for d in drift if d.drifted],
                             "sampled": len(features)}
        predicted = c["predicted"][c["predicted"] >= 0]
        out["prediction_drift"] = prediction_drift(reference.predicted, predicted, classes, options.chi_alpha).to_dict() if len(predicted) else None
    # concept drift: accuracy per sub-window, judged against the reference by the documented rule
    t0, t1 = since.timestamp(), now.timestamp()
    edges = [t0 + (t1 - t0) * i / options.windows for i in range(options.windows + 1)]
    windows = []
    correct = c["label"] == c["predicted"]
    for start, end in zip(edges, edges[1:]):
        mask = labelled & (c["time"] >= start) & (c["time"] < end)
        count = int(mask.sum())
        accuracy = float(correct[mask].mean()) if count else None
        verdict = options.rule.judge(reference.accuracy, accuracy, count) if reference and reference.accuracy is not None \
            else "no reference accuracy"
        windows.append({"start": datetime.fromtimestamp(start, timezone.utc).isoformat(),
                        "end": datetime.fromtimestamp(end, timezone.utc).isoformat(),
                        "labelled": count, "accuracy": accuracy, "verdict": verdict})
    out["concept_drift"] = {"rule": f"drift when a window with at least {options.rule.min_labelled} labels is more than "
                                    f"{options.rule.max_drop:.0%} below the reference accuracy",
                            "windows": windows, "drifted": any(w["verdict"] == "drift" for w in windows)}
    return out


def build_report(predictions, feedback, references: dict[str, Reference | None], options: MonitorOptions) -> dict:
    import pyarrow.compute as pc

    now = options.now or datetime.now(timezone.utc)
    since = now - timedelta(seconds=options.window_s)
    table = joined(predictions, feedback, options.model, since)
    versions = sorted(set(table["version"].to_pylist()), key=lambda v: int(v) if v.isdigit() else 0)
    if options.version:
        versions = [v for v in versions if v == options.version]
    report = {"model": options.model, "window_s": options.window_s, "since": since.isoformat(), "until": now.isoformat(), "versions": {}}
    for version in versions:
        rows = table.filter(pc.equal(table["version"], version))
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
