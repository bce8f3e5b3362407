"""The vectorised paths the report's speed rests on give the same figures as the per-feature definitions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy.stats import wasserstein_distance

from controlplane.quality.classification import classification_report
from controlplane.quality.drift import wasserstein_columns
from controlplane.quality.window import even_rows, matrix


def test_wasserstein_of_every_column_at_once_is_scipys_per_column():
    rng = np.random.default_rng(0)
    reference = np.c_[rng.integers(0, 5, 300), rng.normal(size=300), rng.random(300)].astype(float)  # ties in column 0
    current = np.c_[rng.integers(0, 7, 2000), rng.normal(1, 2, 2000), rng.random(2000)].astype(float)
    current[5, 2] = np.nan
    distances = wasserstein_columns(reference, current)
    assert np.allclose(distances[:2], [wasserstein_distance(reference[:, i], current[:, i]) for i in range(2)])
    assert np.isnan(distances[2])  # a non-finite value: the caller falls back to the column's finite values


def test_list_columns_become_matrices_without_python_lists():
    column = pa.chunked_array([pa.array([[1.0, 2.0], [3.0, 4.0]]), pa.array([[5.0, 6.0], [7.0, 8.0]])])
    assert matrix(column, np.arange(4)).tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]]  # one run: a view
    assert matrix(column, np.array([3, 0])).tolist() == [[7, 8], [1, 2]]  # gathered by position
    sliced = pa.array([[0.0], [1.0, 2.0], [3.0, 4.0]]).slice(1)
    assert matrix(sliced, np.array([1])).tolist() == [[3, 4]]
    assert matrix(pa.array([[1.0], [2.0, 3.0]]), np.arange(2)) is None  # rows of different lengths
    assert matrix(pa.array([[1.0], None], pa.list_(pa.float64())), np.arange(2)) is None


def test_an_even_sample_spans_the_window():
    rows = even_rows(1_000_000, 20_000)
    assert len(rows) == 20_000 and rows[0] == 0 and rows[-1] == 999_999
    assert even_rows(10, 20).tolist() == list(range(10))


def test_the_confusion_matrix_by_bincount_counts_only_the_listed_labels():
    report = classification_report([0, 1, 2, 2, 7], [0, 2, 2, 1, 0], labels=[2, 0, 1])
    assert report.confusion == ((1, 0, 1), (0, 1, 0), (1, 0, 0))  # rows/columns in the order given; label 7 left out
    assert report.accuracy == 0.4
