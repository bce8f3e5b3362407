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
    rows = []
    for i, name in enumerate(names):
        rows.append(_one(name, np.asarray(reference[:, i], dtype=float), np.asarray(current[:, i], dtype=float)))
    return {"features": rows, "flagged": [r["feature"] for r in rows if r["issues"]],
            "thresholds": {"missing_share": defaults.MAX_MISSING_SHARE, "out_of_range_share": defaults.MAX_OUT_OF_RANGE_SHARE,
                           "unseen_share": defaults.MAX_UNSEEN_SHARE}}


def _one(name: str, ref_all: np.ndarray, cur_all: np.ndarray) -> dict:
    n = len(cur_all)
    ref, finite = ref_all[np.isfinite(ref_all)], np.isfinite(cur_all)
    cur = cur_all[finite]
    missing = float(1 - finite.mean()) if n else 0.0
    lo, hi = (float(ref.min()), float(ref.max())) if len(ref) else (None, None)
    out_of_range = float(np.mean((cur < lo) | (cur > hi))) * len(cur) / n if n and lo is not None else 0.0
    categories = _categorical(ref)
    unseen_values: list = []
    unseen = 0.0
    if categories is not None and len(cur):
        outside = ~np.isin(cur, categories)
        unseen = float(outside.sum()) / n
        unseen_values = [float(v) for v in np.unique(cur[outside])[:10]]
    # stuck: one value throughout, where the reference makes that very unlikely (a rare pixel that is zero
    # in 99% of the reference may well be zero in a whole small window)
    constant = bool(len(cur) >= MIN_ROWS_CONSTANT and np.ptp(cur) == 0 and len(ref) and np.ptp(ref) > 0
                    and np.mean(ref == cur[0]) ** len(cur) < CONSTANT_CHANCE)
    issues = []
    if missing > defaults.MAX_MISSING_SHARE:
        issues.append(f"{missing:.1%} missing")
    if categories is None and out_of_range > defaults.MAX_OUT_OF_RANGE_SHARE:
        issues.append(f"{out_of_range:.1%} outside the reference range [{lo:.4g}, {hi:.4g}]")
    if unseen > defaults.MAX_UNSEEN_SHARE:
        issues.append(f"{unseen:.1%} unseen categories ({', '.join(f'{v:g}' for v in unseen_values)})")
    if constant:
        issues.append(f"constant at {cur[0]:.4g}")
    return {"feature": name, "rows": n, "missing_share": missing, "out_of_range_share": out_of_range,
            "reference_range": [lo, hi], "categorical": categories is not None, "unseen_share": unseen,
            "unseen_values": unseen_values, "constant": constant, "issues": issues}
