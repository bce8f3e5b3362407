"""Each arm's accuracy estimated without labels (CBPE, `quality/estimate.py`) from the scores it logged, for a
canary started with --estimate-missing-labels.

Each arm's scores are calibrated on its own version's reference (outputs and labels kept at publish): a
canary that is confidently wrong shows there, and only there. A canary published without one is calibrated
on stable's reference, and the estimate says so: that assumes its scores mean what stable's do.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from controlplane.quality.estimate import calibration_gap, estimate, fit_calibrator
from controlplane.quality.window import matrix

OK = ("ok", "shadow-ok")  # answered (shadow-ok: the canary's mirrored answers)


def arm_outputs(predictions, model: str, version: int, since: datetime) -> tuple[np.ndarray | None, np.ndarray]:
    """The scores (n x classes; None when there are none or they differ in width) and the answered classes of
    `version`'s answered predictions since `since`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.and_(pc.and_(pc.equal(predictions["model"], model), pc.equal(predictions["version"], str(version))),
                   pc.and_(pc.is_in(predictions["status"], value_set=pa.array(OK)),
                           pc.greater_equal(predictions["time"], pa.scalar(since, pa.timestamp("ms", tz="UTC")))))
    rows = np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))
    outputs = matrix(predictions["outputs"], rows)
    predicted = pc.fill_null(predictions["predicted"], -1).to_numpy(zero_copy_only=False)[rows]
    return (outputs if outputs is not None and outputs.shape[1] else None), predicted


def arm_estimate(outputs: np.ndarray | None, predicted: np.ndarray, own, stable, stable_version: int) -> dict:
    """The estimate of one arm: accuracy, its 95 % band, rows, and which reference calibrated it; `not_made`
    says why there is none."""
    if outputs is None or not len(outputs):
        return {"accuracy": None, "band": None, "rows": 0, "not_made": "no logged scores (outputs) to estimate from"}
    width = outputs.shape[1]
    gap = calibration_gap(own, width)
    reference, basis = own, "its own reference"
    if gap is not None:
        fallback = calibration_gap(stable, width)
        if fallback is not None:
            return {"accuracy": None, "band": None, "rows": len(outputs), "not_made": f"{gap}; stable's: {fallback}"}
        reference, basis = stable, f"stable v{stable_version}'s reference (its own cannot calibrate: {gap})"
    calibrator = fit_calibrator(reference.outputs, reference.labels)
    found = estimate(calibrator.probabilities(outputs), predicted)
    return {"accuracy": found["accuracy"], "band": found["band"], "rows": found["rows"], "calibrated_on": basis,
            "not_made": None}


def arm_estimates(predictions, model: str, stable: int, canary: int, since: datetime, references: dict) -> dict[str, dict]:
    """{stable, canary}: each arm's estimate over its answers since `since`; `references`: version -> Reference."""
    return {name: arm_estimate(*arm_outputs(predictions, model, version, since), references.get(version),
                               references.get(stable), stable)
            for name, version in (("stable", stable), ("canary", canary))}
