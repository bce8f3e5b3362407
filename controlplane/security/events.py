"""A small append-only record of security events, kept in the repository so every mlctl process, replica and
gateway that shares the repository sees the same counts.

    <repo>/.mlctl/security/events.json   {"counts": [{"kind", "reason", "n"}], "recent": [event, ...]}

`record(store, kind, reason, ...)` adds one event (compare-and-swap, retried on a concurrent write), so counts only
ever grow: they are Prometheus counters. `counts(store)` returns `{(kind, reason): n}` with one read.

Kinds and reasons in use:
    signature_refused / unsigned          a channel requires a signature and the version has none
    signature_refused / untrusted_key     the version is signed by a key the channel does not trust
    tampering_detected / files_changed    a file (or the manifest) changed after the version was signed
    tampering_detected / bad_signature    the signature itself does not verify against its key
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from controlplane.errors import ConflictError, UsageError
from controlplane.store.base import Store

EVENTS_KEY = ".mlctl/security/events.json"
RECENT_KEPT = 200  # events kept in full; the counts cover every event ever recorded
WRITE_TRIES = 20

SIGNATURE_REFUSED = "signature_refused"
TAMPERING_DETECTED = "tampering_detected"
KINDS = (SIGNATURE_REFUSED, TAMPERING_DETECTED)


@dataclass(frozen=True)
class SecurityEvent:
    kind: str
    reason: str
    at: float
    model: str = ""
    version: int | None = None
    channel: str = ""
    action: str = ""  # what was refused: promote, load, canary, replica start
    detail: str = ""


def _parse(data: bytes | None) -> dict:
    if data is None:
        return {"counts": [], "recent": []}
    try:
        document = json.loads(data)
        document["counts"], document["recent"]
        return document
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"security event record {EVENTS_KEY} is not valid: {exc}") from exc


def record(store: Store, kind: str, reason: str, *, model: str = "", version: int | None = None,
           channel: str = "", action: str = "", detail: str = "") -> SecurityEvent:
    """Add one event; ConflictError only when WRITE_TRIES concurrent writers kept winning."""
    event = SecurityEvent(kind, reason, time.time(), model, version, channel, action, detail)
    for _ in range(WRITE_TRIES):
        data, token = store.read_versioned(EVENTS_KEY)
        document = _parse(data)
        for row in document["counts"]:
            if row["kind"] == kind and row["reason"] == reason:
                row["n"] += 1
                break
        else:
            document["counts"].append({"kind": kind, "reason": reason, "n": 1})
        document["recent"] = (document["recent"] + [asdict(event)])[-RECENT_KEPT:]
        try:
            store.write_if(EVENTS_KEY, json.dumps(document, indent=1).encode(), token)
            return event
        except ConflictError:
            continue
    raise ConflictError(f"security event {kind}/{reason} not recorded in {store.uri}: the record kept changing")


def counts(store: Store) -> dict[tuple[str, str], int]:
    """Every event recorded so far, counted by (kind, reason); {} when there is none."""
    data, _ = store.read_versioned(EVENTS_KEY)
    return {(row["kind"], row["reason"]): int(row["n"]) for row in _parse(data)["counts"]}


def recent(store: Store) -> list[SecurityEvent]:
    """The last RECENT_KEPT events, oldest first."""
    data, _ = store.read_versioned(EVENTS_KEY)
    return [SecurityEvent(**row) for row in _parse(data)["recent"]]
