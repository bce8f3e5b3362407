"""Accuracy, per-class precision/recall/F1/support and the confusion matrix. Pure numpy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    label: int
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationReport:
    samples: int
    accuracy: float | None
    classes: tuple[ClassMetrics, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: true label, columns: predicted
    labels: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def classification_report(y_true, y_pred, labels=None) -> ClassificationReport:
    """Per-class metrics over `labels` (default: every label seen); 0 where a ratio has no denominator,
    as scikit-learn's zero_division=0."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{len(y_true)} labels for {len(y_pred)} predictions")
    labels = tuple(int(v) for v in (labels if labels is not None else np.union1d(y_true, y_pred)))
    confusion = _confusion(y_true, y_pred, np.asarray(labels, dtype=np.int64))
    true_positive = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    actual = confusion.sum(axis=1).astype(float)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    classes = tuple(
        ClassMetrics(label, float(precision[i]), float(recall[i]), float(f1[i]), int(actual[i])) for i, label in enumerate(labels)
    )
    accuracy = float((y_true == y_pred).mean()) if len(y_true) else None
    return ClassificationReport(len(y_true), accuracy, classes, tuple(tuple(int(v) for v in row) for row in confusion), labels)


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts of (true, predicted) over `labels` (pairs with a value outside them are left out), by bincount."""
    k = len(labels)
    if not k:
        return np.zeros((0, 0), dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]

    def index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.clip(np.searchsorted(ordered, values), 0, k - 1)
        return order[at], ordered[at] == values

    t, t_ok = index(y_true)
    p, p_ok = index(y_pred)
    both = t_ok & p_ok
    return np.bincount(t[both] * k + p[both], minlength=k * k).reshape(k, k).astype(np.int64)
