"""A model's window of logged predictions as numpy columns, one dict per version.

DuckDB joins only the narrow columns (ids, times, versions, classes, labels) and returns each row's position
in the predictions table; the wide list columns (features, outputs) are read straight from Arrow's buffers by
those positions, never converted to Python lists, and are a view (no copy) when a version's rows lie in one
run, as they do in a log written in time order, then copied once into a float64 matrix.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

ROW = "_mlctl_row"  # each prediction's position in the table handed to DuckDB

JOIN = f"""
WITH labels AS (
    SELECT prediction_id, arg_max(label, time) AS label, max(time) AS label_time FROM feedback GROUP BY prediction_id
)
SELECT p.{ROW}, p.version, p.time, p.predicted, l.label, l.label_time
FROM predictions p LEFT JOIN labels l USING (prediction_id)
WHERE p.model = $model AND p.time >= $since AND p.status = 'ok'
ORDER BY p.time, p.{ROW}
"""


def arrow(relation):
    return relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()  # DuckDB 2 / 1


def joined_rows(predictions, feedback, model: str, since: datetime):
    """The ok predictions of `model` since `since` in time order, each with its latest label (or none) and its
    position in `predictions` (column ROW), as Arrow; without the features and outputs."""
    import duckdb
    import pyarrow as pa

    narrow = predictions.select(["prediction_id", "model", "version", "time", "predicted", "status"])
    narrow = narrow.append_column(ROW, pa.array(np.arange(predictions.num_rows, dtype=np.int64)))
    con = duckdb.connect()
    con.register("predictions", narrow)
    con.register("feedback", feedback.select(["prediction_id", "label", "time"]))
    return arrow(con.sql(JOIN, params={"model": model, "since": since}))


def matrix(column, rows: np.ndarray) -> np.ndarray | None:
    """The rows `rows` of a list<float> or list<double> column as an n x width array of its type; None when they
    differ in length (or one is null). A view when the rows lie in one run of one chunk; else chunk by chunk
    into one array, without combining the chunks first (one copy, not two)."""
    import pyarrow as pa

    if not len(rows):
        return None
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    starts = np.cumsum([0] + [len(c) for c in chunks])
    which = np.searchsorted(starts, rows, side="right") - 1
    if which.min() == which.max():  # all in one chunk
        return _chunk_rows(chunks[which[0]], rows - starts[which[0]])
    out, width = None, None
    for k in np.unique(which):
        mask = which == k
        part = _chunk_rows(chunks[k], rows[mask] - starts[k])
        if part is None or (width is not None and part.shape[1] != width):
            return None
        if out is None:
            width = part.shape[1]
            out = np.empty((len(rows), width), dtype=part.dtype)
        out[mask] = part
    return out


def _chunk_rows(array, rows: np.ndarray) -> np.ndarray | None:
    """Rows of one list array (a view of its values when they lie in one run), None when their lengths differ."""
    offsets = array.offsets.to_numpy()  # of this (possibly sliced) array, into array.values
    start, end = offsets[rows], offsets[rows + 1]
    width = int(end[0] - start[0])
    valid = array.is_valid().to_numpy(zero_copy_only=False)[rows] if array.null_count else True
    if not np.all(valid) or np.any(end - start != width):
        return None
    if not width:
        return np.zeros((len(rows), 0))
    values = array.values.to_numpy(zero_copy_only=False)
    if values.dtype.kind != "f":
        values = values.astype(float)
    first = int(start[0])
    if int(start[-1]) - first == width * (len(rows) - 1) and np.all(np.diff(start) == width):  # one run: a view
        return values[first: first + width * len(rows)].reshape(len(rows), width)
    return values[start[:, None] + np.arange(width)]


def named_output(column, rows: np.ndarray, name: str) -> np.ndarray | None:
    """The rows `rows` of output `name` from the map column `more_outputs` as an n x width float array; None when
    a row lacks it (an older segment, a failed request, an output too wide to log) or the widths differ."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not len(rows):
        return None
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not isinstance(array, pa.MapArray):
        return None
    offsets = array.offsets.to_numpy()  # into array.keys / array.items, as for a list column
    hits = np.flatnonzero(pc.equal(array.keys, name).to_numpy(zero_copy_only=False))
    entry = np.full(len(array), -1, dtype=np.int64)
    entry[np.searchsorted(offsets, hits, side="right") - 1] = hits  # each hit's row (one entry per name and row)
    entries = entry[rows]
    if np.any(entries < 0):
        return None
    return matrix(array.items, entries)


def version_columns(predictions, feedback, model: str, since: datetime, embedding: str | None = None) -> dict[str, dict]:
    """Per version (in the log's order of first appearance), its window as numpy arrays: time, features,
    outputs, predicted, label, labelled, label_time, and `embedding`: the logged output of that name (or None)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = joined_rows(predictions, feedback, model, since)
    if not table.num_rows:
        return {}
    encoded = pc.dictionary_encode(table["version"]).combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    positions = table[ROW].to_numpy()
    time = table["time"].to_numpy().astype("datetime64[ms]").astype(np.int64) / 1000.0
    predicted = pc.fill_null(table["predicted"], -1).to_numpy(zero_copy_only=False)
    label = pc.fill_null(table["label"], -1).to_numpy(zero_copy_only=False)
    labelled = pc.is_valid(table["label"]).to_numpy(zero_copy_only=False)
    label_time = pc.fill_null(table["label_time"].cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()), 0)
    label_time = label_time.to_numpy(zero_copy_only=False) / 1000.0
    out = {}
    for code, version in enumerate(encoded.dictionary.to_pylist()):
        mask = codes == code
        rows = positions[mask]
        outputs = matrix(predictions["outputs"], rows)
        out[version] = {"time": time[mask], "features": matrix(predictions["features"], rows),
                        "outputs": outputs if outputs is not None and outputs.shape[1] else None,
                        "predicted": predicted[mask], "label": label[mask], "labelled": labelled[mask],
                        "label_time": label_time[mask],
                        "embedding": named_output(predictions["more_outputs"], rows, embedding)
                        if embedding and "more_outputs" in predictions.column_names else None}
    return out


def even_rows(n: int, limit: int) -> np.ndarray:
    """At most `limit` row indices spread evenly over `n` rows (all of them when n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(np.int64)
