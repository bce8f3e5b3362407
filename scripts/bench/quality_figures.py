"""The figures for quality before labels arrive, on the digits model, through the same report `monitor` builds.

- covariate shift, one row per seed: a deliberately weak digits MLP (two epochs) trained on 40% of
  scikit-learn's digits; the reference and the stream are the other 30% and 30%; every image comes with its
  eight one-pixel translations (4,860 rows each: the realised accuracy of 540 rows is itself only known within
  about 3 points, the figure's tolerance); the shifted stream is the 40% of it the model is least sure of (chosen on the inputs,
  P(label | input) kept). Realised vs estimated accuracy (CBPE) before and after, the checks of the unshifted
  stream (every flag `monitor check --max-estimated-drop 0.05 --embedding-output hidden` would raise), the
  drift of the hidden layer logged as a second output, and the estimate from raw logits: softmax first (as
  the report does) against a per-logit calibration;
- injected data-quality faults on the digits stream (10% NaN in f10, f20 stuck, f30 out of range): the
  features flagged;
- a correlation shift that leaves each feature's distribution alone: the per-feature tests against the
  multivariate checks, per seed.

The flags of the unshifted stream are read on the untranslated split too (`covariate_shift_untranslated`): the
nine translations of an image are not independent rows, so the tests on them (class shares above all) see nine
times the evidence there is, and flag a difference between two samples that is only chance.

The speed figure (the full report over 1M logged predictions) is scripts/bench/monitor.py --sizes 1000000.

Usage: .venv/bin/python scripts/bench/quality_figures.py [--seeds 0,1,2,3,4] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from common import write_json


def translated(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each 8x8 image and its eight one-pixel translations (zero filled): nine times the rows, so the realised
    accuracy of the shifted stream is known within about a point (540 rows: within three)."""
    images, out = x.reshape(-1, 8, 8), []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            moved = np.roll(images, (dy, dx), axis=(1, 2))
            if dy:
                moved[:, 0 if dy > 0 else -1, :] = 0
            if dx:
                moved[:, :, 0 if dx > 0 else -1] = 0
            out.append(moved.reshape(len(x), 64))
    return np.concatenate(out), np.tile(y, 9)


def digits_model(seed: int, augment: bool = True):
    """(model, x, y, reference rows, stream rows): the weak MLP trained on one part of the digits, and the
    reference and stream parts (with their translations when `augment`) for one seed."""
    from sklearn.datasets import load_digits

    from controlplane.demo import digits as demo

    d = load_digits()
    x, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    train, ref, stream = np.split(np.random.default_rng(seed).permutation(len(x)), [int(0.4 * len(x)), int(0.7 * len(x))])
    if not augment:
        model = demo.train_classifier(demo.DigitsData(x[train], y[train], x[ref], y[ref]), seed=seed, epochs=3)
        return model, x, y, ref, stream
    (xt, yt), (xr, yr), (xs, ys) = translated(x[train], y[train]), translated(x[ref], y[ref]), translated(x[stream], y[stream])
    model = demo.train_classifier(demo.DigitsData(xt, yt, xr, yr), seed=seed, epochs=2)  # nine times the rows: two epochs
    return model, np.concatenate([xr, xs]), np.concatenate([yr, ys]), np.arange(len(xr)), len(xr) + np.arange(len(xs))


def forward(model, x: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        t = torch.from_numpy(x)
        return {"scores": model(t).numpy(), "logits": model.body(t).numpy(), "hidden": model.body[:2](t).numpy()}


def log_tables(x: np.ndarray, y: np.ndarray, out: dict[str, np.ndarray]):
    """The prediction log's tables as the gateway writes them (scores first, the hidden layer as `hidden`)."""
    import pyarrow as pa

    from controlplane.feedback.predlog import (
        FEEDBACK_SCHEMA,
        PREDICTION_SCHEMA,
        _arrow_schema,
    )
    from controlplane.feedback.predrows import prediction_rows, rows_table

    ids = [f"p{i}" for i in range(len(x))]
    rows = [prediction_rows("digits", "1", ids[i:i + 50], x[i:i + 50], out["scores"][i:i + 50], True, 1.0, "ok",
                            {"hidden": out["hidden"][i:i + 50]}) for i in range(0, len(x), 50)]
    predictions = rows_table(rows, _arrow_schema(PREDICTION_SCHEMA))
    feedback = pa.table({"prediction_id": ids, "time": [datetime.now(UTC)] * len(ids), "label": y.tolist()},
                        schema=_arrow_schema(FEEDBACK_SCHEMA))
    return predictions, feedback


def covariate_shift(seed: int, augment: bool = True) -> dict:
    from controlplane.quality.checks import Thresholds, evaluate
    from controlplane.quality.estimate import estimate, fit_calibrator
    from controlplane.quality.monitor import MonitorOptions, Reference, build_report

    model, x, y, ref, stream = digits_model(seed, augment)
    r, s = forward(model, x[ref]), forward(model, x[stream])
    reference = Reference(x[ref], r["scores"].argmax(1), y[ref], float(np.mean(r["scores"].argmax(1) == y[ref])),
                          r["scores"], {"hidden": r["hidden"]})
    hard = np.flatnonzero(s["scores"].max(1) <= np.quantile(s["scores"].max(1), 0.4))
    row: dict = {"seed": seed, "translations": augment, "reference_accuracy": round(reference.accuracy, 4)}
    for name, rows in (("unshifted", np.arange(len(stream))), ("shifted", hard)):
        part = {k: v[rows] for k, v in s.items()}
        predictions, feedback = log_tables(x[stream][rows], y[stream][rows], part)
        report = build_report(predictions, feedback, {"1": reference}, MonitorOptions(model="digits", embedding_output="hidden"))
        body = report["versions"]["1"]
        est = body["estimated"]
        checks = evaluate(report, Thresholds(max_estimated_drop=0.05, output_drift=True))
        softmax_first, per_logit = fit_calibrator(r["logits"], y[ref]), fit_calibrator(r["logits"], y[ref], logits=False)
        predicted = part["logits"].argmax(1)
        row[name] = {"rows": len(rows), "realised": round(est["realised"], 4), "estimated": round(est["accuracy"], 4),
                     "error_points": round(100 * (est["accuracy"] - est["realised"]), 2),
                     "band": [round(b, 4) for b in est["band"]],
                     "flags": [f"{o.check}: {o.status}" for o in checks.outcomes if o.status != "passed"],
                     "hidden_drift": {m["method"]: m["drifted"] for m in body["embedding_drift"]["methods"]},
                     "logits_error_points": {
                         "softmax_then_isotonic": round(100 * (estimate(softmax_first.probabilities(part["logits"]), predicted)["accuracy"] - est["realised"]), 2),
                         "isotonic_per_logit": round(100 * (estimate(per_logit.probabilities(part["logits"]), predicted)["accuracy"] - est["realised"]), 2)}}
    row["realised_drop_points"] = round(100 * (row["unshifted"]["realised"] - row["shifted"]["realised"]), 2)
    return row


def quality_faults(seed: int) -> dict:
    from controlplane.quality.data_quality import feature_quality

    _, x, _, ref, stream = digits_model(seed, augment=False)
    names = [f"f{i}" for i in range(x.shape[1])]
    current = x[stream].copy()
    rng = np.random.default_rng(seed)
    current[rng.random(len(current)) < 0.10, 10] = np.nan
    current[:, 20] = 0.5
    current[: len(current) // 5, 30] = 2.0  # pixels are in [0, 1]
    clean, faulty = feature_quality(names, x[ref], x[stream]), feature_quality(names, x[ref], current)
    return {"seed": seed, "injected": ["f10 (10% NaN)", "f20 (stuck at 0.5)", "f30 (20% at 2.0, outside [0, 1])"],
            "flagged_clean": clean["flagged"], "flagged_faulty": faulty["flagged"],
            "exactly": faulty["flagged"] == ["f10", "f20", "f30"] and not clean["flagged"]}


def correlation_shift(seed: int) -> dict:
    from controlplane.quality.drift import feature_drift
    from controlplane.quality.multivariate import PcaReconstruction, domain_classifier

    rng = np.random.default_rng(seed)
    same_cov, flipped_cov = [[1, 0.9, 0], [0.9, 1, 0], [0, 0, 1]], [[1, -0.9, 0], [-0.9, 1, 0], [0, 0, 1]]
    reference = rng.multivariate_normal([0, 0, 0], same_cov, 3000)
    out = {"seed": seed}
    for name, cov in (("unchanged", same_cov), ("correlation flipped", flipped_cov)):
        current = rng.multivariate_normal([0, 0, 0], cov, 3000)
        out[name] = {"per_feature_drifted": [f.feature for f in feature_drift(["a", "b", "c"], reference, current) if f.drifted],
                     "pca_drifted": PcaReconstruction(reference).judge(current)["drifted"],
                     "domain_classifier_auroc": round(domain_classifier(reference, current)["auroc"], 3)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict = {"covariate_shift": [], "covariate_shift_untranslated": [], "quality_faults": [], "correlation_shift": []}
    for seed in seeds:
        for key, figure in (("covariate_shift", covariate_shift),
                            ("covariate_shift_untranslated", lambda seed: covariate_shift(seed, augment=False)),
                            ("quality_faults", quality_faults), ("correlation_shift", correlation_shift)):
            results[key].append(figure(seed))
            print(json.dumps({key: results[key][-1]}), flush=True)
    write_json(args.out, "quality_figures.json", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
