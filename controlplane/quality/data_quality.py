"""Data quality per feature against the reference (pure numpy): the share of missing (NaN/inf) values, the share
outside the reference's range, integer values the reference never had, and a feature stuck at one value.

Each figure is a share of the window's rows, flagged past a named threshold (`defaults.py`), so one stray
value in a few hundred rows is seen but not flagged.
"""

from __future__ import annotations

import numpy as np

from controlplane import defaults

MAX_CATEGORIES = 50  # an all-integer reference column with at most this many values is treated as categorical
MIN_ROWS_CONSTANT = 10  # fewer rows and a window "constant" by chance is not called constant
CONSTANT_CHANCE = 1e-3  # a window stuck at a value the reference has this rarely (share ** rows) is flagged


def _categorical(ref: np.ndarray) -> np.ndarray | None:
    """The reference's categories when the column is integer-valued with few distinct values, else None."""
    if not len(ref) or not np.all(np.equal(np.mod(ref, 1), 0)):
        return None
    values = np.unique(ref)
    return values if 1 < len(values) <= MAX_CATEGORIES else None


def feature_quality(names: list[str], reference: np.ndarray, current: np.ndarray) -> dict:
    """Every row of the window, vectorised over the whole matrix (a million rows of 64 features in about a
    second); only the unseen-category count runs per column, and only over the categorical ones."""
    current = np.asarray(current)
    current = current if current.dtype.kind == "f" else current.astype(float)  # a float32 log stays float32 (no copy)
    reference = np.asarray(reference, dtype=current.dtype)  # rounded as the log rounds: its maximum is the log's maximum
    n = len(current)
    ref_finite = np.isfinite(reference)
    lo = np.where(ref_finite, reference, np.inf).min(axis=0, initial=np.inf)
    hi = np.where(ref_finite, reference, -np.inf).max(axis=0, initial=-np.inf)
    with np.errstate(invalid="ignore"):
        # min and max propagate NaN and keep inf: a column whose two are finite has only finite values, and
        # needs no isfinite pass over its million rows (most columns, most windows)
        low = current.min(axis=0) if n else np.full(current.shape[1], np.nan)
        high = current.max(axis=0) if n else np.full(current.shape[1], np.nan)
        dirty = ~(np.isfinite(low) & np.isfinite(high))
        present = np.full(current.shape[1], n, dtype=np.int64)  # finite values per feature
        finite = _Finite(current, dirty)
        if dirty.any() and n:
            part = current[:, dirty]
            present[dirty] = np.count_nonzero(finite.columns(dirty), axis=0)
            low[dirty], high[dirty] = np.fmin.reduce(part, axis=0), np.fmax.reduce(part, axis=0)  # NaN ignored, inf not
        outside = _outside(current, finite, lo, hi, (low < lo) | (high > hi))
    rows = []
    for i, name in enumerate(names):
        ref = reference[:, i][ref_finite[:, i]]
        if np.isfinite(low[i]) and np.isfinite(high[i]):
            spread = float(high[i] - low[i])
        else:  # an infinite value (rare): the finite values' spread, from the column itself
            cur = current[:, i][finite.column(i)]
            spread = float(np.ptp(cur)) if len(cur) else np.nan
            low[i] = cur[0] if len(cur) else np.nan
        counts = {"rows": n, "present": int(present[i]), "outside": int(outside[i]) if len(ref) else 0,
                  "spread": spread, "value": float(low[i])}
        rows.append(_one(name, ref, current[:, i], finite.column(i), counts))
    return {"features": rows, "flagged": [r["feature"] for r in rows if r["issues"]],
            "thresholds": {"missing_share": defaults.MAX_MISSING_SHARE, "out_of_range_share": defaults.MAX_OUT_OF_RANGE_SHARE,
                           "unseen_share": defaults.MAX_UNSEEN_SHARE}}


class _Finite:
    """isfinite of the window's columns, computed only for the columns that hold a non-finite value (`dirty`);
    the others are finite throughout."""

    def __init__(self, current: np.ndarray, dirty: np.ndarray) -> None:
        self.current, self.dirty = current, dirty
        self.masks = {int(i): np.isfinite(current[:, i]) for i in np.flatnonzero(dirty)}

    def column(self, i: int) -> np.ndarray | bool:
        return self.masks.get(i, True)

    def columns(self, cols: np.ndarray) -> np.ndarray:
        return np.column_stack([self.masks[int(i)] for i in np.flatnonzero(cols)])


def _outside(current: np.ndarray, finite: _Finite, lo: np.ndarray, hi: np.ndarray, some: np.ndarray) -> np.ndarray:
    """Finite values outside [lo, hi] per column, counted only in the columns where `some` value is."""
    counts = np.zeros(current.shape[1], dtype=np.int64)
    clean, dirty = some & ~finite.dirty, some & finite.dirty
    if clean.any():  # only finite values: a comparison each side, no mask
        cols = slice(None) if clean.all() else clean
        part = current[:, cols]
        counts[cols] = np.count_nonzero((part < lo[cols]) | (part > hi[cols]), axis=0)
    for i in np.flatnonzero(dirty):
        column, inside = current[:, i], finite.column(int(i))
        counts[i] = np.count_nonzero(((column < lo[i]) | (column > hi[i])) & inside)
    return counts


def _one(name: str, ref: np.ndarray, column: np.ndarray, finite: np.ndarray, counts: dict) -> dict:
    """One feature's row from the whole-matrix counts; `ref` holds the reference's finite values."""
    n, present = counts["rows"], counts["present"]
    missing = float(1 - present / n) if n else 0.0
    lo, hi = (float(ref.min()), float(ref.max())) if len(ref) else (None, None)
    out_of_range = counts["outside"] / n if n else 0.0
    categories = _categorical(ref)
    unseen_values: list = []
    unseen = 0.0
    if categories is not None and present:
        outside = ~np.isin(column, categories) & finite
        unseen = float(outside.sum()) / n
        unseen_values = [float(v) for v in np.unique(column[outside])[:10]]
    # stuck: one value throughout, where the reference makes that very unlikely (a rare pixel that is zero
    # in 99% of the reference may well be zero in a whole small window)
    value = counts["value"]
    constant = bool(present >= MIN_ROWS_CONSTANT and counts["spread"] == 0 and len(ref) and np.ptp(ref) > 0
                    and np.mean(ref == value) ** present < CONSTANT_CHANCE)
    issues = []
    if missing > defaults.MAX_MISSING_SHARE:
        issues.append(f"{missing:.1%} missing")
    if categories is None and out_of_range > defaults.MAX_OUT_OF_RANGE_SHARE:
        issues.append(f"{out_of_range:.1%} outside the reference range [{lo:.4g}, {hi:.4g}]")
    if unseen > defaults.MAX_UNSEEN_SHARE:
        issues.append(f"{unseen:.1%} unseen categories ({', '.join(f'{v:g}' for v in unseen_values)})")
    if constant:
        issues.append(f"constant at {value:.4g}")
    return {"feature": name, "rows": n, "missing_share": missing, "out_of_range_share": out_of_range,
            "reference_range": [lo, hi], "categorical": categories is not None, "unseen_share": unseen,
            "unseen_values": unseen_values, "constant": constant, "issues": issues}
