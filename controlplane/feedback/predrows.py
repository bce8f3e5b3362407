"""A request's prediction-log rows, kept as the arrays the request already had and turned into Arrow columns
only when a segment is written (one vectorised conversion per flush, not a dict per row per request).

    PredictionRows(...)          what the gateway appends: ids, the first input and the outputs as arrays
    rows_table([...], schema)    one Arrow table for many requests' rows (pure)

The first input and output are the `features` and `outputs` columns (float32; the outputs are the scores the
estimate calibrates). `predicted` is the arg-max of a score classifier's outputs, or the class a model answers
itself in its one integer output of one value per row (a pipeline's post step answering the digit). The other
outputs (an embedding, say) go to `more_outputs`, a map from output name to float32 values; an output wider
than `defaults.LOG_OUTPUT_MAX_VALUES` values per row is not logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PredictionRows:
    model: str
    version: str
    ids: tuple[str, ...]
    features: np.ndarray | None  # (rows, ...) the first input; None: the request failed before it had rows
    outputs: np.ndarray | None  # (rows, ...) the first output; None: no answer
    classifier: bool  # the predicted class is the arg-max of the outputs
    latency_ms: float
    status: str
    time_s: float  # seconds since the epoch
    more: dict[str, np.ndarray] | None = None  # the outputs after the first, by name, (rows, ...) each
    labels: np.ndarray | None = None  # (rows,) the class the model answered itself (its one integer label output)

    @property
    def count(self) -> int:
        return len(self.ids)

    def records(self) -> list[dict]:
        """The rows as dicts (as the log's schema reads them back)."""
        table = rows_table([self])
        return table.to_pylist()


def prediction_rows(model: str, version: str, ids, features, outputs, classifier: bool, latency_ms: float,
                    status: str, more: dict[str, np.ndarray] | None = None, labels: np.ndarray | None = None) -> PredictionRows:
    return PredictionRows(model, version, tuple(ids), features, outputs, classifier, latency_ms, status, time.time(), more,
                          labels)


def _matrix(array: np.ndarray | None, rows: int) -> np.ndarray:
    """(rows, width) float32 (as the log stores it); no columns when there is nothing."""
    if array is None:
        return np.empty((rows, 0), dtype=np.float32)
    return np.asarray(array, dtype=np.float32).reshape(rows, -1)


def _list_column(matrices: list[np.ndarray]):
    import pyarrow as pa

    widths = np.concatenate([np.full(m.shape[0], m.shape[1], dtype=np.int32) for m in matrices]) if matrices else np.empty(0, np.int32)
    offsets = np.concatenate([[0], np.cumsum(widths, dtype=np.int64)]).astype(np.int32)
    values = np.concatenate([m.ravel() for m in matrices]) if matrices else np.empty(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.float32()))


def _loggable(rows: PredictionRows) -> list[tuple[str, np.ndarray]]:
    """The outputs after the first that the log keeps: numeric, at most LOG_OUTPUT_MAX_VALUES per row, as float32."""
    from controlplane.defaults import LOG_OUTPUT_MAX_VALUES

    kept = []
    for name, array in (rows.more or {}).items():
        array = np.asarray(array)
        if array.dtype.kind in "fiub" and array.size and array.size // rows.count <= LOG_OUTPUT_MAX_VALUES:
            kept.append((name, array.astype(np.float32, copy=False).reshape(rows.count, -1)))
    return kept


def _map_column(batches: list[PredictionRows]):
    """map<string, list<float32>>: per row, each kept output by name (an empty map when none)."""
    import pyarrow as pa

    per_row, names, widths, values = [], [], [], []
    for b in batches:
        kept = _loggable(b)
        per_row.append(np.full(b.count, len(kept), dtype=np.int64))
        if kept:
            names.append(np.tile(np.array([n for n, _ in kept], dtype=object), b.count))
            widths.append(np.tile(np.array([m.shape[1] for _, m in kept], dtype=np.int64), b.count))
            values.append(np.concatenate([m for _, m in kept], axis=1).ravel())
    counts = np.concatenate(per_row) if per_row else np.empty(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    widths_all = np.concatenate(widths) if widths else np.empty(0, np.int64)
    items = pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(widths_all)]).astype(np.int32), pa.int32()),
                                     pa.array(np.concatenate(values) if values else np.empty(0, np.float32), pa.float32()))
    keys = pa.array(np.concatenate(names) if names else np.empty(0, dtype=object), pa.string())
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), keys, items)


def _predicted(rows: PredictionRows, outputs: np.ndarray) -> np.ndarray:
    """The class per row: the model's own label, or the arg-max of its scores; -1 where there is none (no
    classifier, no answer, a non-finite score, or a negative label)."""
    if rows.labels is not None:
        labels = np.asarray(rows.labels).reshape(rows.count).astype(np.int64)
        return np.where(labels >= 0, labels, -1)
    if not rows.classifier or outputs.shape[1] == 0:
        return np.full(rows.count, -1, dtype=np.int64)
    finite = np.isfinite(outputs).all(axis=1)
    return np.where(finite, np.argmax(np.where(np.isfinite(outputs), outputs, -np.inf), axis=1), -1).astype(np.int64)


def rows_table(batches: list[PredictionRows], schema=None):
    """One Arrow table (the prediction log's schema) for every row of `batches`."""
    import pyarrow as pa

    counts = [b.count for b in batches]
    features = [_matrix(b.features, b.count) for b in batches]
    outputs = [_matrix(b.outputs, b.count) for b in batches]
    predicted = np.concatenate([_predicted(b, o) for b, o in zip(batches, outputs)]) if batches else np.empty(0, np.int64)

    def repeated(values) -> list:
        return [v for v, n in zip(values, counts) for _ in range(n)]

    times = np.repeat(np.array([int(b.time_s * 1000) for b in batches], dtype=np.int64), counts)
    columns = {
        "prediction_id": pa.array([i for b in batches for i in b.ids], pa.string()),
        "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
        "model": pa.array(repeated([b.model for b in batches]), pa.string()),
        "version": pa.array(repeated([b.version for b in batches]), pa.string()),
        "features": _list_column(features),
        "outputs": _list_column(outputs),
        "more_outputs": _map_column(batches),
        "predicted": pa.array(predicted, pa.int64(), mask=predicted < 0),
        "latency_ms": pa.array(np.repeat(np.array([b.latency_ms for b in batches], dtype=np.float64), counts), pa.float64()),
        "status": pa.array(repeated([b.status for b in batches]), pa.string()),
    }
    table = pa.table(columns)
    return table.cast(schema) if schema is not None else table
