"""Drift that per-feature tests miss: the joint distribution of the features (and of embedding/output vectors).

- domain classifier: a gradient-boosted classifier tries to tell reference rows from window rows; its
  cross-validated AUROC is 0.5 when it cannot (no drift), towards 1 when it can. It drifts above
  `DOMAIN_AUROC_THRESHOLD` (the least difference worth a flag) or, where fewer rows make chance reach that
  far, above `AUROC_NULL_SIGMAS` standard deviations of the AUROC of two samples of one distribution (its
  Mann-Whitney null: sqrt((n1 + n2 + 1) / (12 n1 n2)), 0.018 at 540 rows a side, 0.058 at 50);
- PCA reconstruction error (NannyML's method): the reference's principal components, fitted on one half of
  it; the window drifts when its typical error (the geometric mean) is `PCA_SIGMAS` standard errors of the
  difference above the other half's — a threshold from the reference itself. Both means are estimates: the
  held-out half's (a few hundred rows) is no less noisy than the window's, so the standard error counts
  both. The means are of log errors: a feature nearly constant in the reference (a corner pixel) divides
  by a tiny scale, and a few rows' errors come out ten times the median; the plain mean of a few hundred
  such errors is skewed and three of its standard errors were passed by 2 % of unshifted digits windows
  (540 rows a side, 11 % with the window's standard error alone), its log by none of 300. A changed
  correlation leaves each feature's distribution alone and still raises this error (40 standard errors);
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
AUROC_NULL_SIGMAS = 3.0  # one-sided, about 0.13 % of unshifted windows above it


def auroc_threshold(reference_rows: int, current_rows: int, minimum: float = defaults.DOMAIN_AUROC_THRESHOLD) -> float:
    """The AUROC a window must pass: the least worth a flag, raised where chance alone reaches it on few rows."""
    null_sd = np.sqrt((reference_rows + current_rows + 1) / (12 * reference_rows * current_rows))
    return float(max(minimum, 0.5 + AUROC_NULL_SIGMAS * null_sd))


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
    limit = auroc_threshold(len(ref), len(cur), threshold)
    return {"method": "domain classifier", "auroc": auroc, "threshold": limit, "minimum": threshold, "drifted": bool(auroc > limit),
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
        self.floor = float(np.median(errors)) / 1000 or 1e-12  # a perfectly reconstructed row stays finite in log
        logs = self._logs(errors)
        self.reference_mean, self.reference_sd, self.sigmas = float(logs.mean()), float(logs.std(ddof=1)), sigmas
        self.reference_rows = len(held)

    def _logs(self, errors: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(errors, self.floor))

    def errors(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        back = self.pca.inverse_transform(self.pca.transform(z))
        return np.sqrt(((z - back) ** 2).sum(axis=1))

    def judge(self, current: np.ndarray) -> dict:
        cur = _finite_rows(np.asarray(current, dtype=float))
        base = {"method": "PCA reconstruction error", "components": int(self.pca.n_components_),
                "reference_error": float(np.exp(self.reference_mean)), "sigmas": self.sigmas,
                "statistic": "geometric mean of the rows' errors"}
        if not len(cur):
            return {**base, "error": None, "threshold": None, "drifted": False, "not_made": "no complete row in the window"}
        log_error = float(self._logs(self.errors(cur)).mean())
        # the difference of two means, each with its standard error (the window's spread taken as the
        # reference's, so that the threshold does not move with the window it judges)
        limit = self.reference_mean + self.sigmas * self.reference_sd * np.sqrt(1 / self.reference_rows + 1 / len(cur))
        return {**base, "error": float(np.exp(log_error)), "threshold": float(np.exp(limit)), "drifted": bool(log_error > limit),
                "not_made": None}


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
