"""The repository's security events (signature refusals, tampering detections) as the gateway's /metrics shows
them: read at scrape time, at most every CANARY_STATE_TTL_S; a failed read keeps the last figures and warns."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from controlplane.defaults import CANARY_STATE_TTL_S
from controlplane.errors import MlctlError

logger = logging.getLogger(__name__)


def repository_events(uri: str | None, ttl_s: float = CANARY_STATE_TTL_S) -> Callable[[], dict[tuple[str, str], int]] | None:
    """A reader of {(kind, reason): count} for the repository at `uri`; None without a repository."""
    if uri is None:
        return None
    last: dict = {"counts": {}, "at": float("-inf")}

    def counts() -> dict[tuple[str, str], int]:
        if time.monotonic() - last["at"] < ttl_s:
            return last["counts"]
        from controlplane.security import events
        from controlplane.store import open_store

        try:
            last["counts"] = dict(events.counts(open_store(uri)))
        except (MlctlError, OSError, ValueError) as exc:
            logger.warning("security events in %s could not be read (%s: %s); /metrics keeps the last figures",
                           uri, type(exc).__name__, exc)
        last["at"] = time.monotonic()
        return last["counts"]

    return counts
