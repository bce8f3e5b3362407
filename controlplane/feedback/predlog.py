"""The prediction log: predictions and feedback labels appended to Parquet segments, locally or on S3.

Writers never block the request path: `append` puts the record (a dict, or a request's PredictionRows) on a
bounded queue (counting the rows it had to drop when full) and a background thread writes a segment when
`flush_rows` records are waiting or `flush_seconds` have passed, and once more on `close()`. A clean shutdown loses nothing; a crash loses at
most the records not yet flushed (at most `flush_rows`, at most `flush_seconds` old).

    <log>/predictions/model=<m>/<utc yyyymmddThhmmss>-<uuid>.parquet
    <log>/feedback/<utc yyyymmddThhmmss>-<uuid>.parquet

Inputs and outputs are stored as float32 (list<float>): a model's tensors are float32 as a rule, the statistics
need no more, and a million rows of 64 values read back in half the time of float64 (segments written as
float64 still read).
"""

from __future__ import annotations

import io
import logging
import threading
import time
import uuid
from collections import deque
from datetime import UTC, datetime

from controlplane.feedback.predrows import PredictionRows, rows_table
from controlplane.store import Store

logger = logging.getLogger(__name__)

PREDICTION_SCHEMA = {
    "prediction_id": "string", "time": "timestamp[ms, tz=UTC]", "model": "string", "version": "string",
    "features": "list<float>", "outputs": "list<float>",
    "more_outputs": "map<string, list<float>>", "predicted": "int64", "latency_ms": "double", "status": "string",
}
FEEDBACK_SCHEMA = {"prediction_id": "string", "time": "timestamp[ms, tz=UTC]", "label": "int64"}
_DICTIONARY_COLUMNS = ("model", "version", "status")


def _arrow_schema(spec: dict):
    import pyarrow as pa

    types = {"string": pa.string(), "timestamp[ms, tz=UTC]": pa.timestamp("ms", tz="UTC"), "list<double>": pa.list_(pa.float64()),
             "list<float>": pa.list_(pa.float32()),
             "int64": pa.int64(), "double": pa.float64(),
             "map<string, list<float>>": pa.map_(pa.string(), pa.list_(pa.float32()))}
    return pa.schema([(name, types[kind]) for name, kind in spec.items()])


def encode_segment(records: list, spec: dict) -> bytes:
    """A Parquet segment of dict records and PredictionRows (converted together, column by column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(spec)
    dicts = [r for r in records if not isinstance(r, PredictionRows)]
    rows = [r for r in records if isinstance(r, PredictionRows)]
    tables = ([pa.Table.from_pylist(dicts, schema=schema)] if dicts else []) + ([rows_table(rows, schema)] if rows else [])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    sink = io.BytesIO()
    # dictionaries only for the few-valued strings: on ids and float lists they cost 2/3 of the write and grow the file
    pq.write_table(table, sink, compression="zstd", use_dictionary=[c for c in _DICTIONARY_COLUMNS if c in spec])
    return sink.getvalue()


class SegmentWriter:
    """Appends are a deque append (no lock, no wake-up on the request path); the writer thread polls every
    POLL_S, and a record is either a dict (one row) or a PredictionRows (a request's rows, converted at flush)."""

    POLL_S = 0.02

    def __init__(self, store: Store, prefix: str, spec: dict, flush_rows: int = 1000, flush_seconds: float = 2.0,
                 max_queue: int = 100_000, partition: str | None = None) -> None:
        self.store, self.prefix, self.spec = store, prefix.strip("/"), spec
        self.flush_rows, self.flush_seconds, self.partition = flush_rows, flush_seconds, partition
        self.max_queue = max_queue  # queued appends (a request's rows count once)
        self._pending: deque = deque()
        self.dropped = 0  # rows
        self.written = 0
        self.segments = 0
        self.write_errors = 0  # segments that could not be written (their records count as dropped)
        self.last_error: str | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mlctl-log-{prefix}", daemon=True)
        self._thread.start()

    def append(self, record: dict | PredictionRows) -> bool:
        if len(self._pending) >= self.max_queue:
            self.dropped += _rows(record)
            return False
        self._pending.append(record)
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        self._closing.set()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        batch: list = []
        rows, last_flush = 0, time.monotonic()
        while True:
            closing = self._closing.wait(self.POLL_S)
            while self._pending and rows < self.flush_rows:
                record = self._pending.popleft()
                batch.append(record)
                rows += _rows(record)
            due = rows >= self.flush_rows or (batch and time.monotonic() - last_flush >= self.flush_seconds)
            if due or (closing and batch):
                self._flush(batch, rows)
                batch, rows, last_flush = [], 0, time.monotonic()
            elif not batch:
                last_flush = time.monotonic()
            if closing and not batch and not self._pending:
                return

    def _flush(self, batch: list, rows: int) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        folder = f"{self.prefix}/{self.partition}" if self.partition else self.prefix
        key = f"{folder}/{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            self.store.write_bytes(key, encode_segment(batch, self.spec))
            self.written += rows
            self.segments += 1
        except Exception as exc:  # the log must not take the gateway down: warn, count, keep the reason
            self.dropped += rows
            self.write_errors += 1
            self.last_error = f"{key}: {exc}"
            logger.warning("prediction log: %d records lost, segment %s not written: %s", rows, key, exc)


def _rows(record) -> int:
    return record.count if isinstance(record, PredictionRows) else 1


class PredictionLog:
    """Per-model prediction writers plus one feedback writer, over one store."""

    def __init__(self, store: Store, flush_rows: int = 1000, flush_seconds: float = 2.0) -> None:
        # Arrow and Parquet loaded now, at start-up: imported by the first segment instead, they cost ~0.15 s of
        # CPU, mostly holding the GIL, while requests are being served
        import pyarrow.parquet  # noqa: F401

        self.store, self.flush_rows, self.flush_seconds = store, flush_rows, flush_seconds
        self._predictions: dict[str, SegmentWriter] = {}
        self._lock = threading.Lock()
        self.feedback = SegmentWriter(store, "feedback", FEEDBACK_SCHEMA, flush_rows, flush_seconds)

    def predictions(self, model: str) -> SegmentWriter:
        writer = self._predictions.get(model)  # every request asks: no lock once the model's writer exists
        if writer is not None:
            return writer
        with self._lock:
            if model not in self._predictions:
                self._predictions[model] = SegmentWriter(self.store, "predictions", PREDICTION_SCHEMA, self.flush_rows,
                                                         self.flush_seconds, partition=f"model={model}")
            return self._predictions[model]

    def _writers(self) -> list[SegmentWriter]:
        with self._lock:
            return [*self._predictions.values(), self.feedback]

    @property
    def dropped(self) -> int:
        return sum(w.dropped for w in self._writers())

    @property
    def write_errors(self) -> int:
        return sum(w.write_errors for w in self._writers())

    def close(self) -> None:
        for writer in self._writers():
            writer.close()


def read_tables(store: Store, model: str, outputs_by_name: bool = True):
    """(predictions, feedback) of a model as Arrow tables (empty tables when nothing was logged); without the
    outputs after the first (`more_outputs`) when `outputs_by_name` is False."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def load(prefix: str, spec: dict):
        keys = [f"{prefix}/{k}" for k in store.list_files(prefix) if k.endswith(".parquet")]
        columns = None if outputs_by_name or spec is not PREDICTION_SCHEMA else [c for c in spec if c != "more_outputs"]
        tables = [_read_segment(pq.ParquetFile(io.BytesIO(store.read_bytes(k))), columns) for k in keys]
        # older segments: a column they lack (more_outputs) reads back null, their float64 lists widen the others
        return pa.concat_tables(tables, promote_options="permissive") if tables else _arrow_schema(spec).empty_table()

    predictions = load(f"predictions/model={model}", PREDICTION_SCHEMA)
    if not outputs_by_name and "more_outputs" in predictions.column_names:
        predictions = predictions.drop_columns(["more_outputs"])
    return predictions, load("feedback", FEEDBACK_SCHEMA)


def _read_segment(segment, columns: list[str] | None):
    """A segment's table: `columns` among those it has (an older segment lacks the newer ones)."""
    if columns is not None:
        columns = [c for c in columns if c in segment.schema_arrow.names]
    return segment.read(columns=columns)


def find_predictions(store: Store, ids: set[str]) -> dict[str, tuple[str, int | None]]:
    """Logged predictions among `ids`, over every model: id -> (model, number of classes, None when the model is
    no score classifier). Reads only the columns it needs from every prediction segment: a fallback for ids this
    process did not issue (another replica, or before a restart), not a per-request path. A score classifier
    logs one output of several scores; a model answering its class in a label output logs one value in
    `outputs`, or more outputs beside it: its classes are not known (None)."""
    import pyarrow.parquet as pq

    found: dict[str, tuple[str, int | None]] = {}
    keys = [f"predictions/{k}" for k in store.list_files("predictions") if k.endswith(".parquet")]
    for key in sorted(keys, key=lambda k: k.rsplit("/", 1)[-1], reverse=True):  # newest segments first
        data = store.read_bytes(key)
        names = pq.read_schema(io.BytesIO(data)).names  # an older segment has no more_outputs
        columns = [c for c in ("prediction_id", "model", "outputs", "predicted", "more_outputs") if c in names]
        table = pq.read_table(io.BytesIO(data), columns=columns, filters=[("prediction_id", "in", sorted(ids))])
        for row in table.to_pylist():
            scores = row["outputs"] or []
            classes = len(scores) if row["predicted"] is not None and len(scores) > 1 and not row.get("more_outputs") else None
            if row["prediction_id"] not in found or classes is not None:
                found[row["prediction_id"]] = (row["model"], classes)
        if len(found) == len(ids) and all(v[1] is not None for v in found.values()):
            break
    return found
