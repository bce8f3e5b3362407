"""Numerical parity between a reference (eager PyTorch) and an exported model's outputs. Pure numpy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ParityResult:
    max_abs_error: float
    max_rel_error: float
    passed: bool
    samples: int
    atol: float
    rtol: float
    worst: str  # which output and sample gave the largest error beyond tolerance (or the largest error)

    def to_dict(self) -> dict:
        return {
            "max_abs_error": self.max_abs_error,
            "max_rel_error": self.max_rel_error,
            "passed": self.passed,
            "samples": self.samples,
            "atol": self.atol,
            "rtol": self.rtol,
            "worst": self.worst,
        }


def compare(
    expected: Sequence[Mapping[str, np.ndarray]],
    actual: Sequence[Mapping[str, np.ndarray]],
    atol: float,
    rtol: float,
    labels: Sequence[str] | None = None,
) -> ParityResult:
    """Compare outputs sample by sample; passes when every element satisfies |a-e| <= atol + rtol*|e|."""
    labels = labels or [f"sample {i}" for i in range(len(expected))]
    max_abs = max_rel = 0.0
    worst, worst_excess, passed = "", -np.inf, True
    for label, exp, act in zip(labels, expected, actual):
        for name, e in exp.items():
            a = act.get(name)
            if a is None or a.shape != e.shape:
                got = "missing" if a is None else f"shape {list(a.shape)}"
                return ParityResult(np.inf, np.inf, False, len(expected), atol, rtol, f"{name} in {label}: {got}, expected shape {list(e.shape)}")
            e64, a64 = e.astype(np.float64), a.astype(np.float64)
            diff = np.abs(a64 - e64)
            if diff.size == 0:
                continue
            if not np.isfinite(diff).all() and not np.array_equal(np.isnan(a64), np.isnan(e64)):
                return ParityResult(np.inf, np.inf, False, len(expected), atol, rtol, f"{name} in {label}: non-finite values differ")
            diff = np.nan_to_num(diff, nan=0.0)
            rel = diff / np.maximum(np.abs(e64), np.finfo(np.float64).tiny)
            max_abs = max(max_abs, float(diff.max()))
            max_rel = max(max_rel, float(rel[diff > 0].max()) if (diff > 0).any() else 0.0)
            excess = float((diff - (atol + rtol * np.abs(e64))).max())
            if excess > 0:
                passed = False
            if excess > worst_excess:
                worst_excess, worst = excess, f"{name} in {label}"
    return ParityResult(max_abs, max_rel, passed, len(expected), atol, rtol, worst)
