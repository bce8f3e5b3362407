"""What a prediction becomes: the client's answer (strict JSON) and the prediction log's records (pure).

JSON has no NaN or infinity: non-finite numbers are rendered as null in answers, and kept as NaN/Inf in the
log, where the statistics decide what to do with them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import numpy as np

from controlplane.model.signature import Signature


def new_ids(signature: Signature, arrays: dict[str, np.ndarray]) -> list[str]:
    """One prediction id per row of the request."""
    rows = next(iter(arrays.values())).shape[0] if signature.batched else 1
    return [uuid.uuid4().hex for _ in range(rows)]


def classes_of(signature: Signature) -> int | None:
    """The number of classes of a classifier (one float output of one dimension over 1); None otherwise."""
    outputs = signature.outputs
    if len(outputs) == 1 and len(outputs[0].dims) == 1 and outputs[0].dims[0] > 1 and outputs[0].dtype.startswith("float"):
        return int(outputs[0].dims[0])
    return None


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
    """The client's answer as strict JSON bytes (ValueError if anything would not be)."""
    classifier = classes_of(signature) is not None
    predictions = []
    for row, prediction_id in enumerate(ids):
        values = _row(signature, outputs, row)
        entry: dict = {"prediction_id": prediction_id, "outputs": {k: json_values(v) for k, v in values.items()}}
        if classifier:
            scores = next(iter(values.values()))
            entry["predicted_class"] = predicted_class(scores)
            entry["probabilities"] = json_values(scores)
        predictions.append(entry)
    body = {"model": model, "version": version, "latency_ms": round(latency_ms, 3), "predictions": predictions}
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def log_records(model: str, version: str, signature: Signature, arrays: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
                ids: list[str], latency_ms: float, status: str) -> list[dict]:
    """One prediction-log record per row: its features (first input), first output and predicted class."""
    classifier = classes_of(signature) is not None
    now = datetime.now(UTC)
    records = []
    for row, prediction_id in enumerate(ids):
        scores = next(iter(_row(signature, outputs, row).values()))
        records.append({
            "prediction_id": prediction_id, "time": now, "model": model, "version": version,
            "features": features_of(signature, arrays, row), "outputs": np.asarray(scores, dtype=float).ravel().tolist(),
            "predicted": predicted_class(scores) if classifier else None, "latency_ms": latency_ms, "status": status,
        })
    return records


def failure_records(model: str, version: str, signature: Signature, arrays: dict[str, np.ndarray], ids: list[str],
                    latency_ms: float, status: str) -> list[dict]:
    """One record per row of a request that got no answer: features, no outputs, no class."""
    now = datetime.now(UTC)
    return [{"prediction_id": prediction_id, "time": now, "model": model, "version": version,
             "features": features_of(signature, arrays, row), "outputs": [], "predicted": None, "latency_ms": latency_ms,
             "status": status} for row, prediction_id in enumerate(ids)]


def failure_record(model: str, version: str, latency_ms: float, status: str = "error") -> dict:
    """A request that failed before it had rows (no id was issued)."""
    return {"prediction_id": uuid.uuid4().hex, "time": datetime.now(UTC), "model": model, "version": version,
            "features": [], "outputs": [], "predicted": None, "latency_ms": latency_ms, "status": status}


def predicted_class(scores: np.ndarray) -> int | None:
    """The arg-max class; None when a score is not finite (no class can be trusted then)."""
    return int(np.argmax(scores)) if np.isfinite(scores).all() else None


def json_values(array: np.ndarray):
    """Nested lists of plain Python values, NaN and infinities as None."""
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        masked = array.astype(object)
        masked[~np.isfinite(array)] = None
        return masked.tolist()
    return array.tolist()


def features_of(signature: Signature, arrays: dict[str, np.ndarray], row: int) -> list[float]:
    first = arrays[signature.inputs[0].name]
    return np.asarray(first[row] if signature.batched else first, dtype=float).ravel().tolist()


def _row(signature: Signature, outputs: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    return {name: (out[row] if signature.batched else out) for name, out in outputs.items()}
