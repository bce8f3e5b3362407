"""What a prediction becomes: the client's answer (strict JSON) and the prediction log's records (pure).

JSON has no NaN or infinity: non-finite numbers are rendered as null in answers, and kept as NaN/Inf in the
log, where the statistics decide what to do with them. Log rows stay arrays until the log writes a segment.
"""

from __future__ import annotations

import itertools
import os
import uuid

import numpy as np
import orjson

from controlplane.feedback.predrows import PredictionRows, prediction_rows
from controlplane.model.signature import Signature


class IdSource:
    """Prediction ids: a random 64-bit prefix per process and a counter, 32 hex digits like a uuid4's. Unique
    across workers and restarts without a system call per id (uuid4 reads os.urandom every time)."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def take(self, rows: int) -> list[str]:
        prefix, counter = self.prefix, self.counter
        return [f"{prefix}{next(counter) & 0xFFFFFFFFFFFFFFFF:016x}" for _ in range(rows)]


def rows_of(signature: Signature, arrays: dict[str, np.ndarray]) -> int:
    """The number of rows of a request: its batch size, 1 for a model without a batch dimension."""
    return next(iter(arrays.values())).shape[0] if signature.batched else 1


def classes_of(signature: Signature) -> int | None:
    """The number of classes of a classifier (one float output of one dimension over 1); None otherwise."""
    outputs = signature.outputs
    if len(outputs) == 1 and len(outputs[0].dims) == 1 and outputs[0].dims[0] > 1 and outputs[0].dtype.startswith("float"):
        return int(outputs[0].dims[0])
    return None


def label_output(signature: Signature) -> str | None:
    """The output that answers the class itself: the one integer output of one value per row (dims () or (1,)),
    as a pipeline's post step answering the digit does; None for a score classifier (its class is the arg-max)
    and for a model with no such output, or with several."""
    if classes_of(signature) is not None:
        return None
    found = [o.name for o in signature.outputs if o.dtype.startswith(("int", "uint")) and o.dims in ((), (1,))]
    return found[0] if len(found) == 1 else None


def first_non_finite(signature: Signature, arrays: dict[str, np.ndarray]) -> str | None:
    """Where the first NaN or infinity of the inputs is ("input 'x' row 3 holds nan"); None when all are finite."""
    for spec in signature.inputs:
        array = arrays[spec.name]
        if array.dtype.kind != "f":
            continue
        bad = ~np.isfinite(array)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            row = where[0] if signature.batched else 0
            return f"input {spec.name!r} row {row} holds {array[where]}"
    return None


def answer_body(model: str, version: str, signature: Signature, outputs: dict[str, np.ndarray], ids: list[str],
                latency_ms: float) -> bytes:
    """The client's answer as strict JSON bytes: orjson writes NaN and infinities as null."""
    classifier = classes_of(signature) is not None
    label = label_output(signature)
    predictions = []
    for row, prediction_id in enumerate(ids):
        values = _row(signature, outputs, row)
        entry: dict = {"prediction_id": prediction_id, "outputs": values}
        if classifier:
            scores = next(iter(values.values()))
            entry["predicted_class"] = predicted_class(scores)
            entry["probabilities"] = scores
        elif label is not None and label in values:
            answered = int(np.asarray(values[label]).reshape(-1)[0])
            entry["predicted_class"] = answered if answered >= 0 else None  # as the log: a negative label is no class
        predictions.append(entry)
    body = {"model": model, "version": version, "latency_ms": round(latency_ms, 3), "predictions": predictions}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def log_rows(model: str, version: str, signature: Signature, arrays: dict[str, np.ndarray] | None,
             outputs: dict[str, np.ndarray] | None, ids: list[str], latency_ms: float, status: str) -> PredictionRows:
    """A request's rows for the prediction log: the first input as features, the first output, the other outputs
    by name (an embedding: kept or not at flush), the class (at flush: the arg-max of a score classifier, or the
    model's own label output). No outputs: a request that got no answer; no arrays: one that failed before it had
    rows."""
    first_in = None if arrays is None else arrays[signature.inputs[0].name]
    first_out = None if outputs is None else outputs[signature.outputs[0].name]
    more = None if outputs is None else {s.name: outputs[s.name] for s in signature.outputs[1:] if s.name in outputs}
    classifier, label = _kinds(signature)
    labels = None  # a label output of another size (a Python step is not held to its config) gives no class
    if outputs is not None and label in outputs and outputs[label].size == len(ids):
        labels = outputs[label].reshape(len(ids))
    if not signature.batched:
        first_in = None if first_in is None else first_in[np.newaxis]
        first_out = None if first_out is None else first_out[np.newaxis]
        more = None if more is None else {name: array[np.newaxis] for name, array in more.items()}
    return prediction_rows(model, version, ids, first_in, first_out, classifier, latency_ms, status, more or None, labels)


_KINDS: dict[int, tuple[Signature, bool, str | None]] = {}  # id(signature) -> (the signature, classifier, label output)


def _kinds(signature: Signature) -> tuple[bool, str | None]:
    """(whether it is a score classifier, its label output), worked out once per signature object: a request's
    signature is its config read's, the same object for every request until the next read."""
    kept = _KINDS.get(id(signature))
    if kept is None or kept[0] is not signature:  # the entry holds the signature, so its id is not reused meanwhile
        if len(_KINDS) >= 256:
            _KINDS.clear()
        kept = _KINDS[id(signature)] = (signature, classes_of(signature) is not None, label_output(signature))
    return kept[1], kept[2]


def log_records(model: str, version: str, signature: Signature, arrays: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                ids: list[str], latency_ms: float, status: str) -> list[dict]:
    """One prediction-log record per row, as the log reads them back."""
    return log_rows(model, version, signature, arrays, outputs, ids, latency_ms, status).records()


def failure_records(model: str, version: str, signature: Signature, arrays: dict[str, np.ndarray], ids: list[str],
                    latency_ms: float, status: str) -> list[dict]:
    """One record per row of a request that got no answer: features, no outputs, no class."""
    return log_rows(model, version, signature, arrays, None, ids, latency_ms, status).records()


def failure_rows(model: str, version: str, latency_ms: float, status: str = "error") -> PredictionRows:
    """A request that failed before it had rows (no id was issued to the client: the record gets its own)."""
    return prediction_rows(model, version, [uuid.uuid4().hex], None, None, False, latency_ms, status)


def predicted_class(scores: np.ndarray) -> int | None:
    """The arg-max class; None when a score is not finite (no class can be trusted then)."""
    return int(np.argmax(scores)) if np.isfinite(scores).all() else None


def _row(signature: Signature, outputs: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    return {name: (out[row] if signature.batched else out) for name, out in outputs.items()}
