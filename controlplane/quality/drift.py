"""Data drift (PSI and the two-sample KS test per feature), prediction drift (chi-square on the class
distribution) and concept drift (accuracy over windows against the reference, by a documented rule)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PSI_BINS = 10
PSI_EPS = 1e-4  # a bin empty on one side counts as this share, so PSI stays finite


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    ks_statistic: float
    ks_pvalue: float
    drifted: bool

    def to_dict(self) -> dict:
        return asdict(self)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index over quantile bins of the reference."""
    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # a constant reference: one bin for its value, one for anything else
        ref_share = np.array([1.0, 0.0])
        cur_share = np.array([np.mean(current == reference[0]), np.mean(current != reference[0])])
    else:
        edges[0], edges[-1] = -np.inf, np.inf
        ref_share = np.histogram(reference, edges)[0] / len(reference)
        cur_share = np.histogram(current, edges)[0] / max(len(current), 1)
    ref_share = np.clip(ref_share, PSI_EPS, None)
    cur_share = np.clip(cur_share, PSI_EPS, None)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


def feature_drift(names: list[str], reference: np.ndarray, current: np.ndarray, psi_threshold: float = 0.2,
                  ks_alpha: float = 0.01) -> list[FeatureDrift]:
    """Per feature (columns of 2-D arrays). Drifted: PSI above the threshold and KS significant."""
    from scipy.stats import ks_2samp

    out = []
    for i, name in enumerate(names):
        ref, cur = reference[:, i], current[:, i]
        value = psi(ref, cur)
        ks = ks_2samp(ref, cur)
        out.append(FeatureDrift(name, value, float(ks.statistic), float(ks.pvalue),
                                bool(value > psi_threshold and ks.pvalue < ks_alpha)))
    return out


@dataclass(frozen=True)
class PredictionDrift:
    chi2: float
    pvalue: float
    reference_share: dict
    current_share: dict
    drifted: bool

    def to_dict(self) -> dict:
        return asdict(self)


def prediction_drift(reference_classes, current_classes, classes: list[int], alpha: float = 0.01) -> PredictionDrift:
    """Chi-square test of the current class counts against the reference distribution."""
    from scipy.stats import chisquare

    ref = np.array([np.sum(np.asarray(reference_classes) == c) for c in classes], dtype=float)
    cur = np.array([np.sum(np.asarray(current_classes) == c) for c in classes], dtype=float)
    expected = (ref + 0.5) / (ref + 0.5).sum() * cur.sum()  # smoothed, so a class unseen in the reference is testable
    stat, p = chisquare(cur, expected)
    return PredictionDrift(float(stat), float(p),
                           {c: float(r / ref.sum()) if ref.sum() else 0.0 for c, r in zip(classes, ref)},
                           {c: float(v / cur.sum()) if cur.sum() else 0.0 for c, v in zip(classes, cur)},
                           bool(p < alpha))


@dataclass(frozen=True)
class ConceptDriftRule:
    """A window drifts when it has at least `min_labelled` labelled predictions and its accuracy is more
    than `max_drop` below the reference accuracy (absolute)."""

    max_drop: float = 0.05
    min_labelled: int = 50

    def judge(self, reference_accuracy: float, window_accuracy: float | None, labelled: int) -> str:
        if window_accuracy is None or labelled < self.min_labelled:
            return "insufficient labels"
        return "drift" if reference_accuracy - window_accuracy > self.max_drop else "ok"
