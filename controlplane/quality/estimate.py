"""Performance estimated without labels (CBPE, as NannyML does it): the model's scores are calibrated on the
reference sample kept at publish (its `outputs` and `labels`) — after a softmax when the scores are not
probabilities (raw logits: a per-class map of one logit alone ignores the others, a softmax does not) — then each window's expected confusion matrix is
the sum of the calibrated class probabilities of its predictions. Valid under covariate shift (the inputs move,
P(label | input) does not); a concept shift is only seen once labels arrive, beside the estimate.

Pure numpy at estimate time: the calibrators are piecewise-linear maps (isotonic regression's thresholds)
applied with `np.interp`, so a million predictions take well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z_95 = 1.96  # the band: +-1.96 standard errors of the estimate (the labels' Bernoulli noise given the scores)
PROBABILITY_SUM_TOLERANCE = 1e-3  # float32 softmax rows sum to 1 within ~1e-6; logits almost never do
MIN_CALIBRATION_ROWS = 50  # fewer labelled reference rows and the calibration is too thin to trust


@dataclass(frozen=True)
class Calibrator:
    """One monotone map per class (one-vs-rest isotonic regression on the reference), rows renormalised."""

    knots: tuple[tuple[np.ndarray, np.ndarray], ...]  # (score thresholds, calibrated probability) per class
    softmax: bool = False  # the scores are logits: a softmax first, then the maps

    @property
    def classes(self) -> int:
        return len(self.knots)

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        outputs = softmax(outputs) if self.softmax else np.asarray(outputs)
        # class by class on contiguous columns (a million rows: interp reads and writes no strided memory)
        by_class = np.empty((outputs.shape[1], len(outputs)))
        for k, (x, y) in enumerate(self.knots):
            np.copyto(by_class[k], np.interp(outputs[:, k], x, y))
        total = by_class.sum(axis=0)
        empty = total <= 0  # every map said 0: no information, not a certainty
        by_class /= np.where(empty, 1.0, total)
        by_class[:, empty] = 1.0 / self.classes
        return by_class.T


def calibration_gap(reference, output_width: int | None = None) -> str | None:
    """Why the reference cannot calibrate (None when it can)."""
    if reference is None:
        return "the version has no reference sample (publish it with --reference)"
    if reference.labels is None:
        return "the reference sample has no labels to calibrate with (add `labels` to the reference .npz)"
    if getattr(reference, "outputs", None) is None:
        return "the reference sample has no model outputs to calibrate (add `outputs`, the scores, to the reference .npz)"
    if len(reference.labels) < MIN_CALIBRATION_ROWS:
        return f"the reference has {len(reference.labels)} labelled rows, at least {MIN_CALIBRATION_ROWS} are needed to calibrate"
    if output_width is not None and output_width != reference.outputs.shape[1]:
        return f"the log has {output_width} outputs per prediction, the reference {reference.outputs.shape[1]}"
    return None


def are_probabilities(outputs: np.ndarray) -> bool:
    """Rows of scores in [0, 1] that sum to 1 (a softmax's output), as opposed to logits."""
    outputs = np.asarray(outputs, dtype=float)
    return bool(len(outputs) and outputs.min() >= 0 and outputs.max() <= 1
                and np.allclose(outputs.sum(axis=1), 1.0, atol=PROBABILITY_SUM_TOLERANCE))


def softmax(outputs: np.ndarray) -> np.ndarray:
    z = np.asarray(outputs, dtype=float)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_calibrator(outputs: np.ndarray, labels: np.ndarray, logits: bool | None = None) -> Calibrator:
    """Isotonic maps fitted on the reference; `logits` None: decided from the reference's scores."""
    from sklearn.isotonic import IsotonicRegression

    labels = np.asarray(labels)
    logits = not are_probabilities(outputs) if logits is None else logits
    outputs = softmax(outputs) if logits else np.asarray(outputs, dtype=float)
    knots = []
    for k in range(outputs.shape[1]):
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(outputs[:, k], (labels == k).astype(float))
        knots.append((np.asarray(iso.X_thresholds_, dtype=float), np.asarray(iso.y_thresholds_, dtype=float)))
    return Calibrator(tuple(knots), logits)


def expected_confusion(q: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Rows: true class (expected), columns: predicted class (`predicted` within 0..classes-1)."""
    classes = q.shape[1]
    return np.stack([np.bincount(predicted, weights=q[:, k], minlength=classes)[:classes] for k in range(classes)])


def estimate(q: np.ndarray, predicted: np.ndarray) -> dict:
    """Estimated accuracy with its band, and per-class precision/recall/F1, from calibrated probabilities."""
    n = len(predicted)
    if not n:
        return {"rows": 0, "accuracy": None, "band": None, "classes": []}
    rows = np.arange(n)
    valid = (predicted >= 0) & (predicted < q.shape[1])
    p_right = np.where(valid, q[rows, np.clip(predicted, 0, q.shape[1] - 1)], 0.0)
    accuracy = float(p_right.mean())
    half = Z_95 * float(np.sqrt(np.sum(p_right * (1 - p_right)))) / n
    confusion = expected_confusion(q, predicted) if valid.all() else expected_confusion(q[valid], predicted[valid])
    tp, col, row = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, col, out=np.zeros_like(tp), where=col > 0)
    recall = np.divide(tp, row, out=np.zeros_like(tp), where=row > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=precision + recall > 0)
    classes = [{"label": k, "precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                "expected_support": float(row[k])} for k in range(q.shape[1])]
    return {"rows": n, "accuracy": accuracy, "band": [max(0.0, accuracy - half), min(1.0, accuracy + half)], "classes": classes}


def reference_check(calibrator: Calibrator, reference) -> dict:
    """How well the calibration holds on the reference itself: estimated vs realised accuracy, in-sample and
    two-fold (fit on one half, estimate the other), so an overfitted calibration shows."""
    q = calibrator.probabilities(reference.outputs)
    realised = float(np.mean(reference.predicted == reference.labels))
    n = len(reference.labels)
    order = np.random.default_rng(0).permutation(n)
    halves = (order[: n // 2], order[n // 2:])
    errors = []
    for fit, held in (halves, halves[::-1]):
        half_cal = fit_calibrator(reference.outputs[fit], reference.labels[fit], calibrator.softmax)
        est = estimate(half_cal.probabilities(reference.outputs[held]), reference.predicted[held])["accuracy"]
        errors.append(est - float(np.mean(reference.predicted[held] == reference.labels[held])))
    return {"rows": n, "scores": "logits (softmax first)" if calibrator.softmax else "probabilities", "realised_accuracy": realised, "estimated_accuracy": estimate(q, reference.predicted)["accuracy"],
            "two_fold_error": float(np.mean(np.abs(errors)))}
