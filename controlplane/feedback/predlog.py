"""The prediction log: predictions and feedback labels appended to Parquet segments, locally or on S3.

Writers never block the request path: `append` puts the record on a bounded queue (counting what it had
to drop when full) and a background thread writes a segment when `flush_rows` records are waiting or
`flush_seconds` have passed, and once more on `close()`. A clean shutdown loses nothing; a crash loses at
most the records not yet flushed (at most `flush_rows`, at most `flush_seconds` old).

    <log>/predictions/model=<m>/<utc yyyymmddThhmmss>-<uuid>.parquet
    <log>/feedback/<utc yyyymmddThhmmss>-<uuid>.parquet
"""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
import uuid
from datetime import UTC, datetime

from controlplane.store import Store

logger = logging.getLogger(__name__)

PREDICTION_SCHEMA = {
    "prediction_id": "string", "time": "timestamp[ms, tz=UTC]", "model": "string", "version": "string",
    "features": "list<double>", "outputs": "list<double>", "predicted": "int64", "latency_ms": "double", "status": "string",
}
FEEDBACK_SCHEMA = {"prediction_id": "string", "time": "timestamp[ms, tz=UTC]", "label": "int64"}


def _arrow_schema(spec: dict):
    import pyarrow as pa

    types = {"string": pa.string(), "timestamp[ms, tz=UTC]": pa.timestamp("ms", tz="UTC"), "list<double>": pa.list_(pa.float64()),
             "int64": pa.int64(), "double": pa.float64()}
    return pa.schema([(name, types[kind]) for name, kind in spec.items()])


def encode_segment(records: list[dict], spec: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(records, schema=_arrow_schema(spec))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class SegmentWriter:
    def __init__(self, store: Store, prefix: str, spec: dict, flush_rows: int = 1000, flush_seconds: float = 2.0,
                 max_queue: int = 100_000, partition: str | None = None) -> None:
        self.store, self.prefix, self.spec = store, prefix.strip("/"), spec
        self.flush_rows, self.flush_seconds, self.partition = flush_rows, flush_seconds, partition
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self.written = 0
        self.segments = 0
        self.write_errors = 0  # segments that could not be written (their records count as dropped)
        self.last_error: str | None = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mlctl-log-{prefix}", daemon=True)
        self._thread.start()

    def append(self, record: dict) -> bool:
        try:
            self.queue.put_nowait(record)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def close(self, timeout_s: float = 30.0) -> None:
        self._closing.set()
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        batch: list[dict] = []
        last_flush = time.monotonic()
        while True:
            closing = self._closing.is_set()
            try:
                batch.append(self.queue.get(timeout=0.05))
                while len(batch) < self.flush_rows:
                    batch.append(self.queue.get_nowait())
            except queue.Empty:
                pass
            due = len(batch) >= self.flush_rows or (batch and time.monotonic() - last_flush >= self.flush_seconds)
            if due or (closing and batch):
                self._flush(batch)
                batch, last_flush = [], time.monotonic()
            elif not batch:
                last_flush = time.monotonic()
            if closing and not batch and self.queue.empty():
                return

    def _flush(self, batch: list[dict]) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        folder = f"{self.prefix}/{self.partition}" if self.partition else self.prefix
        key = f"{folder}/{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            self.store.write_bytes(key, encode_segment(batch, self.spec))
            self.written += len(batch)
            self.segments += 1
        except Exception as exc:  # the log must not take the gateway down: warn, count, keep the reason
            self.dropped += len(batch)
            self.write_errors += 1
            self.last_error = f"{key}: {exc}"
            logger.warning("prediction log: %d records lost, segment %s not written: %s", len(batch), key, exc)


class PredictionLog:
    """Per-model prediction writers plus one feedback writer, over one store."""

    def __init__(self, store: Store, flush_rows: int = 1000, flush_seconds: float = 2.0) -> None:
        self.store, self.flush_rows, self.flush_seconds = store, flush_rows, flush_seconds
        self._predictions: dict[str, SegmentWriter] = {}
        self._lock = threading.Lock()
        self.feedback = SegmentWriter(store, "feedback", FEEDBACK_SCHEMA, flush_rows, flush_seconds)

    def predictions(self, model: str) -> SegmentWriter:
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


def read_tables(store: Store, model: str):
    """(predictions, feedback) of a model as Arrow tables (empty tables when nothing was logged)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def load(prefix: str, spec: dict):
        keys = [f"{prefix}/{k}" for k in store.list_files(prefix) if k.endswith(".parquet")]
        tables = [pq.read_table(io.BytesIO(store.read_bytes(k))) for k in keys]
        return pa.concat_tables(tables) if tables else _arrow_schema(spec).empty_table()

    return load(f"predictions/model={model}", PREDICTION_SCHEMA), load("feedback", FEEDBACK_SCHEMA)


def find_predictions(store: Store, ids: set[str]) -> dict[str, tuple[str, int | None]]:
    """Logged predictions among `ids`, over every model: id -> (model, number of classes, None when the model is
    no classifier). Reads only the columns it needs from every prediction segment: a fallback for ids this
    process did not issue (another replica, or before a restart), not a per-request path."""
    import pyarrow.parquet as pq

    found: dict[str, tuple[str, int | None]] = {}
    keys = [f"predictions/{k}" for k in store.list_files("predictions") if k.endswith(".parquet")]
    for key in sorted(keys, key=lambda k: k.rsplit("/", 1)[-1], reverse=True):  # newest segments first
        table = pq.read_table(io.BytesIO(store.read_bytes(key)), columns=["prediction_id", "model", "outputs", "predicted"],
                              filters=[("prediction_id", "in", sorted(ids))])
        for row in table.to_pylist():
            classes = len(row["outputs"]) if row["predicted"] is not None and row["outputs"] else None
            if row["prediction_id"] not in found or classes is not None:
                found[row["prediction_id"]] = (row["model"], classes)
        if len(found) == len(ids) and all(v[1] is not None for v in found.values()):
            break
    return found
