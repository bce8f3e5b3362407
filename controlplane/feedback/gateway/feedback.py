"""POST /v1/feedback: true labels for issued predictions, checked before anything is written.

An id is known when this gateway issued it recently (the index) or when it is in the prediction log
(issued by another replica, or before a restart, once flushed). A label must be a class of the model.
A batch with any bad item is rejected whole.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, HTTPException, Request

from controlplane.errors import MlctlError
from controlplane.feedback.gateway.auth import require
from controlplane.feedback.gateway.state import GatewayState, state_of

router = APIRouter()


@router.post("/v1/feedback", status_code=202)
async def feedback(request: Request, _: str = Depends(require("admin"))) -> dict:
    gateway = state_of(request)
    status = "error"
    try:
        items = _items(await _body(request))
        issued = await _issued(gateway, [prediction_id for prediction_id, _ in items])
        _check(items, issued)
        now = datetime.now(UTC)
        gateway.log_feedback([{"prediction_id": prediction_id, "time": now, "label": label} for prediction_id, label in items])
        status = "ok"
        return {"accepted": len(items)}
    except HTTPException as exc:
        status = str(exc.status_code)
        raise
    finally:
        gateway.metrics.count("feedback", "", "", status)


async def _body(request: Request):
    try:
        return await request.json()
    except ValueError as exc:
        raise HTTPException(400, f"body is not JSON: {exc}") from exc


def _items(body) -> list[tuple[str, int]]:
    items = body.get("feedback", [body]) if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise HTTPException(422, 'body must be {"prediction_id": ..., "label": ...} or {"feedback": [...]}')
    checked = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("prediction_id"), str):
            raise HTTPException(422, "each feedback needs a string prediction_id")
        label = item.get("label")
        if isinstance(label, bool) or not isinstance(label, int):
            raise HTTPException(422, f"label of {item['prediction_id']!r} must be an integer class")
        checked.append((item["prediction_id"], label))
    return checked


async def _issued(gateway: GatewayState, ids: list[str]) -> dict[str, tuple[str, int | None]]:
    """id -> (model, classes) for the ids that were issued: the index first, the log for the rest."""
    found = {i: gateway.index.get(i) for i in ids if gateway.index.get(i) is not None}
    missing = set(ids) - set(found)
    if missing and gateway.log is not None:
        from controlplane.feedback.predlog import find_predictions

        try:
            found.update(await asyncio.to_thread(find_predictions, gateway.log.store, missing))
        except (MlctlError, OSError, ValueError) as exc:  # pyarrow's errors are ValueError/OSError subclasses
            raise HTTPException(503, f"prediction ids {sorted(missing)[:3]} are not in this gateway's memory and the "
                                     f"prediction log could not be read: {exc}") from exc
    return found


def _check(items: list[tuple[str, int]], issued: dict[str, tuple[str, int | None]]) -> None:
    unknown = [prediction_id for prediction_id, _ in items if prediction_id not in issued]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise HTTPException(404, f"unknown prediction_id {unknown[0]!r}{more}: not issued by this gateway recently and not "
                                 "in the prediction log (another replica's predictions are found once its log is flushed); "
                                 "nothing was recorded")
    for prediction_id, label in items:
        model, classes = issued[prediction_id]
        if classes is not None and not 0 <= label < classes:
            raise HTTPException(422, f"label {label} of prediction {prediction_id!r} is outside the classes of model "
                                     f"{model!r}: valid labels are 0 to {classes - 1} (range [0, {classes})); nothing was recorded")
