"""Config revisions: audited, numbered serving settings of a model (instances, batching), apart from its
versions. Design (docs/config-revisions.md):

- A model's versions say WHAT is served (immutable files); its config revisions say HOW (serving settings).
  A channel holds one of each: a version switch keeps the channel's revision, a revision switch keeps its
  version, and each rolls back on its own.
- Revision 0 is the config the model was published with. Revisions 1, 2, ... are created by `mlctl tune
  --apply` (with what they were measured on: version, budget, throughput, p99) and never change.
- `.mlctl/config-revisions/<model>.json` holds the revisions, which revision each channel holds, and the
  history of those moves (compare-and-swap, like the channel state). The channel's own history gets one
  `config-revision` entry per switch as well, so `mlctl history` shows both kinds of change in order.

This module is the state (pure transitions) and its storage; config_switch.py moves replicas.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

from controlplane.errors import NotFoundError, UsageError
from controlplane.store.documents import DocumentStore

PREFIX = ".mlctl/config-revisions"
PUBLISHED = 0  # the revision a channel holds until one is applied: the config as published


@dataclass(frozen=True)
class Revision:
    revision: int
    settings: dict  # perf.tune.space.Candidate.to_dict()
    measured_on_version: int
    basis: dict  # budget, search, the measured point
    created_at: str
    created_by: str
    reason: str = ""


@dataclass(frozen=True)
class RevisionMove:
    seq: int
    time: str
    user: str
    action: str  # apply | rollback
    channel: str
    from_revision: int
    to_revision: int
    version: int  # the channel's version at the time
    reason: str = ""


@dataclass(frozen=True)
class RevisionState:
    model: str
    revisions: tuple[Revision, ...] = ()
    channels: dict[str, int] = field(default_factory=dict)
    history: tuple[RevisionMove, ...] = ()

    def held(self, channel: str) -> int:
        return self.channels.get(channel, PUBLISHED)

    def get(self, revision: int) -> Revision | None:
        """None for revision 0 (the published config); NotFoundError for one that does not exist."""
        if revision == PUBLISHED:
            return None
        for r in self.revisions:
            if r.revision == revision:
                return r
        raise NotFoundError(f"model {self.model!r} has no config revision {revision} (revisions: 0..{len(self.revisions)})")

    def add(self, settings: dict, version: int, basis: dict, now: str, user: str, reason: str = "") -> tuple[RevisionState, Revision]:
        revision = Revision(len(self.revisions) + 1, settings, version, basis, now, user, reason)
        return replace(self, revisions=(*self.revisions, revision)), revision

    def move(self, action: str, channel: str, to_revision: int, version: int, now: str, user: str, reason: str = "") -> RevisionState:
        self.get(to_revision)
        entry = RevisionMove(len(self.history) + 1, now, user, action, channel, self.held(channel), to_revision, version, reason)
        return replace(self, channels={**self.channels, channel: to_revision}, history=(*self.history, entry))

    def rollback_target(self, channel: str) -> int:
        """The revision the channel held before its current one (repeated rollbacks walk further back)."""
        stack: list[int] = []
        for entry in self.history:
            if entry.channel != channel:
                continue
            if entry.action == "rollback":
                while stack and stack[-1] != entry.to_revision:
                    stack.pop()
                if stack:
                    stack.pop()
            else:
                stack.append(entry.from_revision)
        if not stack:
            raise NotFoundError(f"channel {channel!r} of {self.model!r} has no earlier config revision to roll back to "
                                f"(it holds revision {self.held(channel)})", hint="name one with --to-revision N")
        return stack[-1]

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "revisions": [asdict(r) for r in self.revisions], "channels": self.channels,
                           "history": [asdict(h) for h in self.history]}, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> RevisionState:
        try:
            data = json.loads(text)
            return cls(data["model"], tuple(Revision(**r) for r in data.get("revisions", [])),
                       {k: int(v) for k, v in data.get("channels", {}).items()},
                       tuple(RevisionMove(**h) for h in data.get("history", [])))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{where} is not a valid mlctl config revision document: {exc}") from exc


class RevisionStore:
    def __init__(self, store) -> None:
        self.documents = DocumentStore(store, PREFIX, parse=RevisionState.from_json, dump=RevisionState.to_json,
                                       name_of=lambda state: state.model)

    def load(self, model: str) -> tuple[RevisionState, str | None]:
        state, token = self.documents.load(model)
        return (state if state is not None else RevisionState(model)), token

    def save(self, state: RevisionState, token: str | None) -> str:
        return self.documents.save(state, token)


def settings_config(base, revision: Revision | None):
    """`base` (the published config) with a revision's settings; `base` itself for revision 0."""
    if revision is None:
        return base
    from controlplane.perf.tune.space import Candidate, apply_candidate

    return apply_candidate(base, Candidate.from_dict(revision.settings))


def with_config_revision(repo, base, channel: str):
    """The config a channel serves its versions with: the published config and the channel's config revision."""
    state, _ = RevisionStore(repo.store).load(base.name)
    return settings_config(base, state.get(state.held(channel)))
