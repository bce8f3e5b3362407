"""Drift that per-feature tests miss: the joint distribution of the features (and of embedding/output vectors).

- domain classifier: a gradient-boosted classifier tries to tell reference rows from window rows; its
  cross-validated AUROC is 0.5 when it cannot (no drift), towards 1 when it can;
- PCA reconstruction error (NannyML's method): the reference's principal components, fitted on one half of
  it; the window drifts when its mean error is `PCA_SIGMAS` standard errors above the other half's — a
  threshold from the reference itself. A changed correlation leaves each feature's distribution alone
  and still raises this error;
- embeddings: the domain classifier, the share of drifted components, and the maximum mean discrepancy
  (RBF kernel, permutation test).

The caller passes an even sample of the window (`defaults.MONITOR_SAMPLE_ROWS`); the domain classifier and the
MMD take fewer still (`MAX_ROWS`, 500 a side), so that a million predictions stay within the report's time budget.
"""

from __future__ import annotations

import numpy as np

from controlplane import defaults

MAX_ROWS = 2000  # per side, for the domain classifier and MMD (an even sample)
PERMUTATIONS = 100


def _even(x: np.ndarray, limit: int) -> np.ndarray:
    return x[:: max(1, len(x) // limit)][:limit]


def _finite_rows(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x).all(axis=1)]


def domain_classifier(reference: np.ndarray, current: np.ndarray, threshold: float = defaults.DOMAIN_AUROC_THRESHOLD) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    ref, cur = _even(_finite_rows(reference), MAX_ROWS), _even(_finite_rows(current), MAX_ROWS)
    if min(len(ref), len(cur)) < 20:
        return {"method": "domain classifier", "auroc": None, "threshold": threshold, "drifted": False,
                "not_made": f"too few complete rows ({len(ref)} reference, {len(cur)} window; 20 a side needed)"}
    x = np.vstack([ref, cur])
    y = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    model = HistGradientBoostingClassifier(max_iter=60, max_depth=3, learning_rate=0.1, random_state=0)
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # OpenMP threads fighting other processes made it 10x slower on a busy 2-core host
        scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    auroc = float(roc_auc_score(y, scores))
    return {"method": "domain classifier", "auroc": auroc, "threshold": threshold, "drifted": bool(auroc > threshold),
            "rows": [len(ref), len(cur)], "not_made": None}


class PcaReconstruction:
    """PCA fitted on half the reference (standardised); the other half gives the error's own distribution."""

    def __init__(self, reference: np.ndarray, variance: float = defaults.PCA_VARIANCE, sigmas: float = defaults.PCA_SIGMAS) -> None:
        from sklearn.decomposition import PCA

        ref = _finite_rows(np.asarray(reference, dtype=float))
        order = np.random.default_rng(0).permutation(len(ref))
        fit, held = ref[order[: len(ref) // 2]], ref[order[len(ref) // 2:]]
        self.mean, self.scale = fit.mean(axis=0), fit.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        self.pca = PCA(n_components=variance, svd_solver="full").fit((fit - self.mean) / self.scale)
        errors = self.errors(held)
        self.reference_mean, self.reference_sd, self.sigmas = float(errors.mean()), float(errors.std(ddof=1)), sigmas

    def errors(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        back = self.pca.inverse_transform(self.pca.transform(z))
        return np.sqrt(((z - back) ** 2).sum(axis=1))

    def judge(self, current: np.ndarray) -> dict:
        cur = _finite_rows(np.asarray(current, dtype=float))
        base = {"method": "PCA reconstruction error", "components": int(self.pca.n_components_),
                "reference_error": self.reference_mean, "sigmas": self.sigmas}
        if not len(cur):
            return {**base, "error": None, "threshold": None, "drifted": False, "not_made": "no complete row in the window"}
        error = float(self.errors(cur).mean())
        threshold = self.reference_mean + self.sigmas * self.reference_sd / np.sqrt(len(cur))
        return {**base, "error": error, "threshold": float(threshold), "drifted": bool(error > threshold), "not_made": None}


def mmd(reference: np.ndarray, current: np.ndarray, alpha: float = defaults.MMD_ALPHA, limit: int = 500) -> dict:
    """Maximum mean discrepancy with an RBF kernel (bandwidth: the median pairwise distance), permutation p-value."""
    from scipy.spatial.distance import cdist

    ref, cur = _even(_finite_rows(reference), limit), _even(_finite_rows(current), limit)
    if min(len(ref), len(cur)) < 20:
        return {"method": "MMD", "mmd": None, "pvalue": None, "drifted": False, "not_made": "too few complete rows"}
    x = np.vstack([ref, cur])
    d2 = cdist(x, x, "sqeuclidean")
    bandwidth = np.median(d2[d2 > 0]) if (d2 > 0).any() else 1.0
    k = np.exp(-d2 / bandwidth)
    n = len(ref)
    # every permutation at once: column j of `first` marks the rows it puts on the reference side, so the three
    # kernel means are quadratic forms (one matrix product instead of a hundred fancy-indexed sub-matrices)
    rng = np.random.default_rng(0)
    orders = [np.arange(len(x))] + [rng.permutation(len(x)) for _ in range(PERMUTATIONS)]
    first = np.zeros((len(x), len(orders)))
    for j, order in enumerate(orders):
        first[order[:n], j] = 1.0
    second = 1.0 - first
    m = len(x) - n
    k_first, k_second = k @ first, k @ second
    statistics = ((first * k_first).sum(axis=0) / n**2 + (second * k_second).sum(axis=0) / m**2
                  - 2 * (first * k_second).sum(axis=0) / (n * m))
    observed = float(statistics[0])
    exceed = int(np.sum(statistics[1:] >= observed))
    pvalue = (exceed + 1) / (PERMUTATIONS + 1)
    return {"method": "MMD", "mmd": observed, "pvalue": pvalue, "alpha": alpha, "drifted": bool(pvalue < alpha), "not_made": None}


def embedding_drift(reference: np.ndarray, current: np.ndarray) -> dict:
    """Three views of drift in vectors: a domain classifier, the share of drifted components, the MMD. The
    embedding drifts when a majority of the three say so."""
    from scipy.stats import ks_2samp

    from controlplane.quality.drift import choose_test

    flags = []  # per component, by the test chosen by sample size (no PSI: components have no natural bins)
    for i in range(reference.shape[1]):
        ref, cur = reference[:, i][np.isfinite(reference[:, i])], current[:, i][np.isfinite(current[:, i])]
        flags.append(bool(len(ref) and len(cur) and choose_test(ref, cur, float(ks_2samp(ref, cur).pvalue))[3]))
    share = float(np.mean(flags)) if flags else 0.0
    methods = [domain_classifier(reference, current),
               {"method": "share of drifted components", "share": share, "threshold": defaults.EMBEDDING_DRIFTED_SHARE,
                "drifted": bool(share > defaults.EMBEDDING_DRIFTED_SHARE), "not_made": None,
                "drifted_components": [f"c{i}" for i, flag in enumerate(flags) if flag]},
             mmd(reference, current)]
    made = [m for m in methods if not m["not_made"]]
    votes = sum(m["drifted"] for m in made)
    return {"dimensions": reference.shape[1], "methods": methods, "drifted": bool(made and votes * 2 > len(made)),
            "not_made": None if made else "no method could be made"}
