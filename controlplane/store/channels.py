"""Channels of a model and their audit history: one state document per model, changed by pure transitions.

The document is the single source of truth for what each channel should serve. An operation first
records itself as `pending` (compare-and-swap: only one at a time), then acts on the replicas, then
finishes: the channel moves (or not) and one history entry is appended, in the same write.

    {"model": ..., "channels": {"production": 3}, "pending": {...} | null, "history": [...]}

A channel is removed (`remove_channel`) by the same kind of write: it leaves `channels`, and a `remove`
entry in the history (from its last version to none) keeps the replay exact.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace

from controlplane.errors import ConflictError, NotFoundError, UsageError

_CHANNEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
OUTCOMES = ("succeeded", "failed", "interrupted")
SWITCHES = ("promote", "rollback")  # the actions that move a channel; others (canary decisions) only record
REMOVE = "remove"  # takes a channel away (a mistyped one, or one no longer used); recorded like a switch


def check_channel(name: str) -> str:
    if not _CHANNEL.match(name):
        raise UsageError(f"channel name {name!r} is not valid", hint="use lower-case letters, digits, '-' or '_'")
    return name


@dataclass(frozen=True)
class Operation:
    """What an action is about to do; `pending` while it runs, a history entry once it ends."""

    op_id: str
    action: str  # promote | rollback
    channel: str
    from_version: int | None
    to_version: int
    reason: str
    user: str
    host: str
    started_at: str
    pid: int = 0  # lets reconcile on the same host tell a dead operation from a running one


@dataclass(frozen=True)
class HistoryEntry:
    seq: int
    time: str
    user: str
    host: str
    action: str
    channel: str
    from_version: int | None
    to_version: int | None
    reason: str
    outcome: str
    detail: str = ""
    op_id: str = ""
    duration_s: float | None = None


@dataclass(frozen=True)
class ModelState:
    model: str
    channels: dict[str, int] = field(default_factory=dict)
    pending: Operation | None = None
    history: tuple[HistoryEntry, ...] = ()

    # --- transitions (pure) ----------------------------------------------------------------------
    def begin(self, operation: Operation) -> ModelState:
        if self.pending is not None:
            p = self.pending
            raise ConflictError(
                f"model {self.model!r} has an operation in progress: {p.action} of {p.channel} to version "
                f"{p.to_version}, started {p.started_at} by {p.user}@{p.host}",
                hint="wait for it; if it died, run 'mlctl reconcile'",
            )
        if self.channels.get(operation.channel) != operation.from_version:
            raise ConflictError(f"channel {operation.channel!r} of {self.model!r} moved while preparing; retry")
        return replace(self, pending=operation)

    def finish(self, op_id: str, outcome: str, now: str, detail: str = "", duration_s: float | None = None) -> ModelState:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        op = self.pending
        if op is None or op.op_id != op_id:
            raise ConflictError(f"operation {op_id} on {self.model!r} is no longer pending (someone reconciled it)")
        channels = dict(self.channels)
        if outcome == "succeeded":
            channels[op.channel] = op.to_version
        entry = HistoryEntry(
            seq=len(self.history) + 1,
            time=now,
            user=op.user,
            host=op.host,
            action=op.action,
            channel=op.channel,
            from_version=op.from_version,
            to_version=op.to_version,
            reason=op.reason,
            outcome=outcome,
            detail=detail,
            op_id=op.op_id,
            duration_s=None if duration_s is None else round(duration_s, 3),
        )
        return replace(self, channels=channels, pending=None, history=(*self.history, entry))

    def note(self, action: str, channel: str, from_version: int | None, to_version: int | None, outcome: str,
             detail: str, actor: dict, now: str) -> ModelState:
        """Append an audit entry that moves no channel (canary decisions)."""
        entry = HistoryEntry(seq=len(self.history) + 1, time=now, user=actor.get("user", ""), host=actor.get("host", ""),
                             action=action, channel=channel, from_version=from_version, to_version=to_version, reason="",
                             outcome=outcome, detail=detail)
        return replace(self, history=(*self.history, entry))

    def remove_channel(self, channel: str, reason: str, actor: dict, now: str) -> ModelState:
        """Take `channel` away, with a history entry; the versions stay published."""
        if self.pending is not None:
            p = self.pending
            raise ConflictError(
                f"model {self.model!r} has an operation in progress ({p.action} of {p.channel} to version {p.to_version})",
                hint="wait for it; if it died, run 'mlctl reconcile'",
            )
        if channel not in self.channels:
            known = ", ".join(sorted(self.channels)) or "none"
            raise NotFoundError(f"model {self.model!r} has no channel {channel!r} to remove (channels: {known})")
        channels = {k: v for k, v in self.channels.items() if k != channel}
        entry = HistoryEntry(seq=len(self.history) + 1, time=now, user=actor.get("user", ""), host=actor.get("host", ""),
                             action=REMOVE, channel=channel, from_version=self.channels[channel], to_version=None,
                             reason=reason, outcome="succeeded")
        return replace(self, channels=channels, history=(*self.history, entry))

    # --- queries ---------------------------------------------------------------------------------
    def rollback_target(self, channel: str) -> int:
        """The version the channel held before its current one (repeated rollbacks walk further back)."""
        stack: list[int] = []
        for entry in self.history:
            if entry.channel != channel or entry.outcome != "succeeded":
                continue
            if entry.action == REMOVE:  # a channel created again later starts a new past
                stack.clear()
            elif entry.action not in SWITCHES:
                continue
            elif entry.action == "rollback":
                while stack and stack[-1] != entry.to_version:
                    stack.pop()
                if stack:
                    stack.pop()
            elif entry.from_version is not None:
                stack.append(entry.from_version)
        if channel not in self.channels:
            known = ", ".join(sorted(self.channels)) or "none"
            raise NotFoundError(f"model {self.model!r} has no channel {channel!r} (channels: {known})")
        if not stack:
            raise NotFoundError(
                f"channel {channel!r} of {self.model!r} has no earlier version to roll back to "
                f"(it holds version {self.channels[channel]})",
                hint="name one with --to VERSION",
            )
        return stack[-1]

    def inconsistencies(self) -> list[str]:
        """Where the channels disagree with what the history says happened ([] when consistent)."""
        replayed: dict[str, int] = {}
        problems = []
        for index, entry in enumerate(self.history, start=1):
            if entry.seq != index:
                problems.append(f"history entry {index} has sequence number {entry.seq}")
            if entry.outcome == "succeeded" and entry.action == REMOVE:
                if replayed.get(entry.channel) != entry.from_version:
                    problems.append(f"entry {entry.seq} removes {entry.channel} at {entry.from_version}, "
                                    f"but the history had it at {replayed.get(entry.channel)}")
                replayed.pop(entry.channel, None)
            if entry.outcome == "succeeded" and entry.action in SWITCHES:
                if replayed.get(entry.channel) != entry.from_version:
                    problems.append(f"entry {entry.seq} moves {entry.channel} from {entry.from_version}, "
                                    f"but the history had it at {replayed.get(entry.channel)}")
                replayed[entry.channel] = entry.to_version
        if replayed != self.channels:
            problems.append(f"channels {self.channels} but the history replays to {replayed}")
        return problems

    # --- serialisation ---------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "channels": self.channels,
                "pending": asdict(self.pending) if self.pending else None,
                "history": [asdict(h) for h in self.history],
            },
            indent=1,
            sort_keys=True,
        ) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> ModelState:
        try:
            data = json.loads(text)
            return cls(
                model=data["model"],
                channels={k: int(v) for k, v in data.get("channels", {}).items()},
                pending=Operation(**data["pending"]) if data.get("pending") else None,
                history=tuple(HistoryEntry(**h) for h in data.get("history", [])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{where} is not a valid mlctl channel state: {exc}") from exc
