"""Which arm a request goes to (used by the gateway, per request: no I/O)."""

from __future__ import annotations

import hashlib
import math


class Router:
    """Exact weighted round-robin: after n requests, floor(n * weight / 100) went to the canary. With a sticky
    key, a hash of model and key decides, so one client always meets the same arm at a given weight."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def to_canary(self, model: str, weight: float, sticky_key: str | None = None) -> bool:
        if weight <= 0:
            return False
        if weight >= 100:
            return True
        if sticky_key is not None:
            digest = hashlib.sha256(f"{model}:{sticky_key}".encode()).digest()
            return int.from_bytes(digest[:8], "big") % 10_000 < weight * 100
        n = self.counts.get(model, 0)
        self.counts[model] = n + 1
        return math.floor((n + 1) * weight / 100) > math.floor(n * weight / 100)
