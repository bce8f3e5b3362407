"""The gate's accuracy without labels (opt-in, --estimate-missing-labels): the candidate serves its reference
features, and its scores are calibrated on the baseline version's reference (production's, or the one before
it), whose outputs and labels were kept at publish (CBPE, `quality/estimate.py`). The result is always the
`estimated_accuracy` gate, with its band, never `accuracy`.

The calibration assumes the candidate's scores mean what the baseline's do (a retrained model of the same
kind); a candidate that is confidently wrong is not seen by it, only by labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controlplane.errors import UsageError
from controlplane.quality.estimate import (
    Calibrator,
    calibration_gap,
    estimate,
    fit_calibrator,
)
from controlplane.quality.reference import load_reference


@dataclass(frozen=True)
class Calibration:
    calibrator: Calibrator
    version: int  # whose reference calibrated it


def calibration(repo, model: str, baseline: int | None) -> Calibration:
    """The baseline's calibration; UsageError, before anything is served, when there is none."""
    if baseline is None:
        raise UsageError(f"no held-out set, and no production version of {model!r} whose reference could calibrate an estimate",
                         hint="pass --holdout (features and labels)")
    reference = load_reference(repo, model, baseline)
    gap = calibration_gap(reference)
    if gap is not None:
        raise UsageError(f"no held-out set, and v{baseline}'s reference cannot calibrate an estimate: {gap}",
                         hint="pass --holdout (features and labels)")
    return Calibration(fit_calibrator(reference.outputs, reference.labels), baseline)


def estimated_gate(scores: np.ndarray, calibration: Calibration, version: int, floor: float | None, basis: str):
    """The `estimated_accuracy` gate from the candidate's served scores; failed (NOT MADE) when the scores do
    not fit the calibration."""
    from controlplane.release.gate import GateResult

    scores = np.asarray(scores, dtype=float).reshape(len(scores), -1)
    classes = calibration.calibrator.classes
    if scores.shape[1] != classes:
        return GateResult("estimated_accuracy", False, None, floor,
                          f"NOT MADE: v{version} serves {scores.shape[1]} scores per row, v{calibration.version}'s reference "
                          f"calibrates {classes}", basis="estimated")
    found = estimate(calibration.calibrator.probabilities(scores), scores.argmax(axis=1))
    value, (low, high) = found["accuracy"], found["band"]
    detail = (f"ESTIMATED, no labels: {value:.1%} [{low:.1%}, {high:.1%}] over {found['rows']} reference rows served by "
              f"v{version} (CBPE, calibrated on v{calibration.version}'s reference); floor: {basis}")
    return GateResult("estimated_accuracy", floor is None or value >= floor, value, floor, detail, basis="estimated",
                      band=(low, high))
