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
from typing import NamedTuple

import numpy as np


class PredictionRows(NamedTuple):
    """A request's rows (a named tuple: one is made per request, and a frozen dataclass costs four times as much)."""

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


def _widths(arrays: list[np.ndarray | None], counts: list[int]) -> list[int]:
    """Values per row of each request's array (0 for none)."""
    return [a.size // n if a is not None and n else 0 for a, n in zip(arrays, counts)]


def _list_column(arrays: list[np.ndarray | None], counts: list[int], widths: list[int]):
    """list<float32>, a row per request row: every request's values joined in one call, the offsets from the
    widths repeated by the row counts (no per-request numpy call)."""
    import pyarrow as pa

    present = [a for a, w in zip(arrays, widths) if w]  # axis=None: each flattened inside the one call
    values = np.concatenate(present, axis=None).astype(np.float32, copy=False) if present else np.empty(0, np.float32)
    offsets = np.zeros(sum(counts) + 1, dtype=np.int32)
    np.cumsum(np.repeat(np.asarray(widths, dtype=np.int32), counts), out=offsets[1:])
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


def _map_column(batches: list[PredictionRows], counts: list[int]):
    """map<string, list<float32>>: per row, each kept output by name (an empty map when none)."""
    import pyarrow as pa

    entries, names, widths, values = [], [], [], []  # entries per request; names, widths per map entry
    for b in batches:
        kept = _loggable(b) if b.more else []
        entries.append(len(kept))
        if kept:
            names.extend([n for n, _ in kept] * b.count)
            widths.extend([m.shape[1] for _, m in kept] * b.count)
            values.append(kept[0][1].ravel() if len(kept) == 1 else np.concatenate([m for _, m in kept], axis=1).ravel())
    offsets = np.zeros(sum(counts) + 1, dtype=np.int32)
    np.cumsum(np.repeat(np.asarray(entries, dtype=np.int32), counts), out=offsets[1:])
    item_offsets = np.zeros(len(widths) + 1, dtype=np.int32)
    np.cumsum(np.asarray(widths, dtype=np.int32), out=item_offsets[1:])
    items = pa.ListArray.from_arrays(pa.array(item_offsets, pa.int32()),
                                     pa.array(np.concatenate(values) if values else np.empty(0, np.float32), pa.float32()))
    return pa.MapArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(names, pa.string()), items)


def _predicted(batches: list[PredictionRows], counts: list[int], widths: list[int]) -> np.ndarray:
    """The class per row: the model's own label, or the arg-max of its scores; -1 where there is none (no
    classifier, no answer, a non-finite score, or a negative label). One vectorised pass per kind of request
    (labelled; score classifiers of one width), not a pass per request."""
    predicted = np.full(sum(counts), -1, dtype=np.int64)
    labelled = [b.labels is not None for b in batches]
    if any(labelled):
        labels = np.concatenate([np.asarray(b.labels).reshape(b.count) for b, has in zip(batches, labelled) if has]).astype(np.int64)
        predicted[np.repeat(labelled, counts)] = np.where(labels >= 0, labels, -1)
    scored = [0 if has or not b.classifier else w for b, has, w in zip(batches, labelled, widths)]
    for width in set(scored) - {0}:
        chosen = [s == width for s in scored]
        scores = np.concatenate([b.outputs for b, c in zip(batches, chosen) if c], axis=None).astype(np.float32, copy=False)
        scores = scores.reshape(-1, width)
        finite = np.isfinite(scores)
        best = np.argmax(np.where(finite, scores, -np.inf), axis=1)
        predicted[np.repeat(chosen, counts)] = np.where(finite.all(axis=1), best, -1)
    return predicted


def rows_table(batches: list[PredictionRows], schema=None):
    """One Arrow table (the prediction log's schema) for every row of `batches`."""
    import pyarrow as pa

    counts = [b.count for b in batches]
    features = [b.features for b in batches]
    outputs = [b.outputs for b in batches]
    output_widths = _widths(outputs, counts)
    predicted = _predicted(batches, counts, output_widths)

    def repeated(values) -> list:
        return [v for v, n in zip(values, counts) for _ in range(n)]

    times = np.repeat(np.array([int(b.time_s * 1000) for b in batches], dtype=np.int64), counts)
    columns = {
        "prediction_id": pa.array([i for b in batches for i in b.ids], pa.string()),
        "time": pa.array(times, pa.timestamp("ms", tz="UTC")),
        "model": pa.array(repeated([b.model for b in batches]), pa.string()),
        "version": pa.array(repeated([b.version for b in batches]), pa.string()),
        "features": _list_column(features, counts, _widths(features, counts)),
        "outputs": _list_column(outputs, counts, output_widths),
        "more_outputs": _map_column(batches, counts),
        "predicted": pa.array(predicted, pa.int64(), mask=predicted < 0),
        "latency_ms": pa.array(np.repeat(np.array([b.latency_ms for b in batches], dtype=np.float64), counts), pa.float64()),
        "status": pa.array(repeated([b.status for b in batches]), pa.string()),
    }
    table = pa.table(columns)
    return table.cast(schema) if schema is not None else table
