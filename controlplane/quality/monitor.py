"""`mlctl monitor report`: per version and window, quality from predictions joined with feedback, data and
prediction drift against the version's reference sample, concept drift over sub-windows, feedback coverage.

The join runs in DuckDB over Arrow tables read from the prediction log (local or S3), the wide columns go to
numpy without Python lists (`window.py`), and the comparisons with the reference use an even sample of the
window (`defaults.MONITOR_SAMPLE_ROWS`). `load_report` is the I/O edge (repository, log); `build_report` works
on the tables it is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import numpy as np

from controlplane import defaults
from controlplane.errors import NotFoundError, UsageError
from controlplane.quality.classification import classification_report
from controlplane.quality.drift import (
    PREDICTION_DRIFT_ALPHA,
    ConceptDriftRule,
    feature_drift,
    prediction_drift,
)
from controlplane.quality.reference import Reference, load_reference  # noqa: F401 (Reference is part of this API)
from controlplane.quality.sections import sections
from controlplane.quality.window import arrow, even_rows, version_columns


@dataclass(frozen=True)
class MonitorOptions:
    model: str
    version: str | None = None
    window_s: float = 3600.0
    windows: int = 6  # sub-windows for concept drift
    rule: ConceptDriftRule = field(default_factory=ConceptDriftRule)
    psi_threshold: float = defaults.PSI_THRESHOLD
    ks_alpha: float = defaults.KS_ALPHA
    chi_alpha: float = PREDICTION_DRIFT_ALPHA
    now: datetime | None = None
    segment_feature: str | None = None  # "f<i>": also slice the window by this input
    embedding_output: str | None = None  # an output after the first whose drift is watched (else the first's)


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
    return arrow(con.sql(JOIN_ALL, params={"model": model, "since": since}))


def version_report(c: dict, reference: Reference | None, options: MonitorOptions, since: datetime, now: datetime) -> dict:
    """One version's section of the report from its window's columns (`window.version_columns`)."""
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
    if reference is not None and n:
        out["data_drift"] = _data_drift(c["features"], reference, options)
        predicted = c["predicted"][c["predicted"] >= 0]
        out["prediction_drift"] = prediction_drift(reference.predicted, predicted, classes, options.chi_alpha).to_dict() if len(predicted) else None
    # concept drift: accuracy per sub-window, judged against the reference by the documented rule
    t0, t1 = since.timestamp(), now.timestamp()
    edges = [t0 + (t1 - t0) * i / options.windows for i in range(options.windows + 1)]
    windows = []
    correct = c["label"] == c["predicted"]
    for start, end in pairwise(edges):
        mask = labelled & (c["time"] >= start) & (c["time"] < end)
        count = int(mask.sum())
        accuracy = float(correct[mask].mean()) if count else None
        verdict = options.rule.judge(reference.accuracy, accuracy, count) if reference and reference.accuracy is not None \
            else "no reference accuracy"
        windows.append({"start": datetime.fromtimestamp(start, UTC).isoformat(),
                        "end": datetime.fromtimestamp(end, UTC).isoformat(),
                        "labelled": count, "accuracy": accuracy, "verdict": verdict})
    judged = [w for w in windows if w["verdict"] in ("ok", "drift")]
    drifted = any(w["verdict"] == "drift" for w in judged)
    lacks, not_made = None, None  # why concept drift could not be judged: "reference" or "labels"
    if not reference or reference.accuracy is None:
        lacks, not_made = "reference", "the version has no reference accuracy (publish it with --reference)"
    elif not judged:
        lacks, not_made = "labels", (f"no sub-window has {options.rule.min_labelled} labels "
                                     f"(most: {max((w['labelled'] for w in windows), default=0)})")
    out["concept_drift"] = {"rule": f"drift when a window with at least {options.rule.min_labelled} labels is more than "
                                    f"{options.rule.max_drop:.0%} below the reference accuracy",
                            "windows": windows, "judged": len(judged), "drifted": drifted,
                            "status": "not made" if not_made else ("drift" if drifted else "ok"), "not_made": not_made,
                            "lacks": lacks}
    out.update(sections(c, reference, edges, options.segment_feature, options.embedding_output))
    return out


def _data_drift(features: np.ndarray | None, reference: Reference, options: MonitorOptions) -> dict:
    """PSI and KS per feature against the reference; `not_made` says why a comparison was impossible."""
    base = {"psi_threshold": options.psi_threshold, "ks_alpha": options.ks_alpha, "features": [], "drifted": [],
            "sampled": 0, "non_finite": {}, "not_compared": [], "not_made": None}
    if features is None:
        return {**base, "not_made": "the logged feature rows have different lengths"}
    if features.shape[1] != reference.features.shape[1]:
        return {**base, "not_made": f"the log has {features.shape[1]} features per row, the reference "
                                    f"{reference.features.shape[1]}"}
    names = [f"f{i}" for i in range(features.shape[1])]
    non_finite = dict(zip(names, (~np.isfinite(features)).sum(axis=0).tolist()))  # counted over all rows, not the sample
    features = features[even_rows(len(features), defaults.MONITOR_SAMPLE_ROWS)]
    drift = feature_drift(names, reference.features, features, options.psi_threshold, options.ks_alpha)
    return {**base, "features": [{**d.to_dict(), "non_finite": non_finite[d.feature]} for d in drift],
            "drifted": [d.feature for d in drift if d.drifted], "sampled": len(features),
            "non_finite": {name: count for name, count in non_finite.items() if count},
            "not_compared": [d.feature for d in drift if d.psi is None]}


def build_report(predictions, feedback, references: dict[str, Reference | None], options: MonitorOptions) -> dict:
    now = options.now or datetime.now(UTC)
    since = now - timedelta(seconds=options.window_s)
    columns = version_columns(predictions, feedback, options.model, since, options.embedding_output)
    versions = sorted(columns, key=lambda v: int(v) if v.isdigit() else 0)
    if options.version:
        versions = [v for v in versions if v == options.version]
    if options.segment_feature is not None:
        check_segment_feature(options.segment_feature, references)
    report = {"model": options.model, "version": options.version, "window_s": options.window_s, "since": since.isoformat(),
              "until": now.isoformat(), "versions": {}}
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # small matrices (64 columns): BLAS threads only wait on each other, 10x slower when busy
        for version in versions:
            report["versions"][version] = version_report(columns[version], references.get(version), options, since, now)
    return report


def check_segment_feature(feature: str, references: dict) -> None:
    widths = {r.features.shape[1] for r in references.values() if r is not None}
    width = max(widths, default=None)
    if not (feature.startswith("f") and feature[1:].isdigit()) or (width is not None and int(feature[1:]) >= width):
        known = f"f0..f{width - 1}" if width else "f<i> (the i-th input value)"
        raise UsageError(f"segment feature {feature!r} is not an input feature of the reference", hint=f"features: {known}")


def load_report(repository, log, options: MonitorOptions) -> dict:
    """The report of `options.model` from the prediction log in the store `log`, with the references of the
    versions in `repository`. NotFoundError for a log that does not exist, a model the repository lacks and
    a version that neither the repository nor the log knows. No predictions in the window is no error here:
    the caller decides (`no_predictions`)."""
    import pyarrow.compute as pc

    from controlplane.feedback.predlog import read_tables

    if not log.exists():
        raise NotFoundError(f"prediction log {log.uri} not found",
                            hint="pass the folder (or s3://bucket/prefix) the gateway writes with --log, as --log or MLCTL_PREDICTION_LOG")
    known = repository.versions(options.model)
    references = {str(v): load_reference(repository, options.model, v) for v in known}
    predictions, feedback = read_tables(log, options.model, outputs_by_name=options.embedding_output is not None)
    logged = set(pc.unique(predictions["version"]).to_pylist())
    if options.version is not None and options.version not in references and options.version not in logged:
        listed = ", ".join(str(v) for v in known) or "none"
        raise NotFoundError(f"version {options.version} of model {options.model!r} is neither in the repository "
                            f"{repository.uri} (versions: {listed}) nor in the prediction log {log.uri}",
                            hint=f"run 'mlctl model versions {options.model}'")
    report = build_report(predictions, feedback, references, options)
    report["log"] = log.uri
    return report


def no_predictions(report: dict) -> str | None:
    """Why the report holds nothing to judge, or None when it holds predictions."""
    if report["versions"]:
        return None
    who = f"{report['model']} v{report['version']}" if report.get("version") else report["model"]
    return f"no predictions for {who} in {report.get('log', 'the prediction log')} since {report['since']}"
