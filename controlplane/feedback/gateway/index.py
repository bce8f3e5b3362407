"""Recently issued prediction ids, so feedback can be checked without reading the log (bounded, oldest out)."""

from __future__ import annotations

from collections import OrderedDict


class PredictionIndex:
    """id -> (model, number of classes or None), at most `size` entries; only the event loop touches it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[str, int | None]] = OrderedDict()

    def add(self, ids: list[str], model: str, classes: int | None) -> None:
        for prediction_id in ids:
            self._entries[prediction_id] = (model, classes)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get(self, prediction_id: str) -> tuple[str, int | None] | None:
        return self._entries.get(prediction_id)

    def __len__(self) -> int:
        return len(self._entries)
