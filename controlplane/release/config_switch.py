"""Move a channel to another config revision with the lifecycle's zero-downtime switch: the channel's version
stays; each replica loads the same version with the new settings in place (Triton serves the old instances
until the new are ready), is checked to answer, then the next. A failure reverts the replicas already
switched and leaves the channel's revision where it was. The channel state's pending operation is the lock (a
promote cannot run meanwhile) and its history records the switch; the revision document records the move.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

from controlplane.errors import MlctlError, NotFoundError
from controlplane.model import config as model_config
from controlplane.model.provenance import current_actor, utc_now
from controlplane.release.config_revisions import (
    RevisionState,
    RevisionStore,
    settings_config,
)
from controlplane.store.channels import Operation, check_channel
from controlplane.triton.replicas import open_replicas

ACTION = "config-revision"


@dataclass(frozen=True)
class RevisionSwitch:
    model: str
    channel: str
    version: int
    from_revision: int
    to_revision: int
    outcome: str  # succeeded | unchanged
    replicas: tuple[dict, ...] = ()
    duration_s: float = 0.0


def apply_revision(lifecycle, model: str, channel: str, settings: dict, version: int, basis: dict, reason: str = "") -> RevisionSwitch:
    """Record `settings` (measured on `version`) as a new revision and switch `channel` to it."""
    channel_version(lifecycle, model, channel)  # refuse an unknown channel before recording anything
    store = RevisionStore(lifecycle.repo.store)
    state, token = store.load(model)
    actor = current_actor()
    added, revision = state.add(settings, version, basis, utc_now(), actor["user"], reason)  # saved with the move only
    return _switch(lifecycle, model, channel, revision.revision, "apply", reason, (added, token))


def rollback_revision(lifecycle, model: str, channel: str, to: int | None = None, reason: str = "") -> RevisionSwitch:
    state, token = RevisionStore(lifecycle.repo.store).load(model)
    target = to if to is not None else state.rollback_target(channel)
    return _switch(lifecycle, model, channel, target, "rollback", reason, (state, token))


def channel_version(lifecycle, model: str, channel: str) -> int:
    check_channel(channel)
    lifecycle.repo.config(model)  # an unknown model says so first
    state, _ = lifecycle.channels.load(model)
    if channel not in state.channels:
        raise NotFoundError(f"model {model!r} has no version on channel {channel!r}, so there is nothing to serve with new settings",
                            hint=f"promote a version first: 'mlctl promote {model} VERSION --to {channel}'")
    return state.channels[channel]


def _switch(lifecycle, model: str, channel: str, to_revision: int, action: str, reason: str, loaded) -> RevisionSwitch:
    revisions, token = loaded
    version = channel_version(lifecycle, model, channel)
    current = revisions.held(channel)
    published = lifecycle.repo.config(model)
    new_base, old_base = settings_config(published, revisions.get(to_revision)), settings_config(published, revisions.get(current))
    if to_revision == current:
        return RevisionSwitch(model, channel, version, current, to_revision, "unchanged")
    replicas = open_replicas(lifecycle.targets.replicas(channel), lifecycle.control_key, lifecycle.control_timeout_s)
    actor, started = current_actor(), time.monotonic()
    state, state_token = lifecycle.channels.load(model)
    operation = Operation(uuid.uuid4().hex[:12], ACTION, channel, version, version, f"revision {current} -> {to_revision}"
                          + (f": {reason}" if reason else ""), actor["user"], actor["host"], utc_now(), os.getpid())
    pending = state.begin(operation)
    pending_token = lifecycle.channels.save(pending, state_token)  # ConflictError: another operation holds the model
    done: list[dict] = []
    try:
        lifecycle.roll_out(model, replicas, new_base, version, model_config.signature_of(new_base, api=True), done,
                           revert=(old_base, version), aborted=f"config switch of {model!r} aborted", served=" with the new settings")
        moved = revisions.move(action, channel, to_revision, version, utc_now(), actor["user"], reason)
        RevisionStore(lifecycle.repo.store).save(moved, token)
    except KeyboardInterrupt:
        raise  # left pending: 'mlctl reconcile' closes it and converges the replicas on the recorded revision
    except Exception as exc:
        detail = str(exc) if isinstance(exc, MlctlError) else f"{type(exc).__name__}: {exc}"
        lifecycle.channels.save(pending.finish(operation.op_id, "failed", utc_now(), detail, time.monotonic() - started), pending_token)
        raise
    finally:
        for replica in replicas:
            replica.close()
    duration = round(time.monotonic() - started, 3)
    lifecycle.channels.save(pending.finish(operation.op_id, "succeeded", utc_now(), f"config revision {to_revision}", duration), pending_token)
    lifecycle.write_channel_config(model, channel, new_base, version)
    lifecycle.say(f"{model}: channel {channel} serves version {version} with config revision {to_revision} ({duration:.2f} s)")
    return RevisionSwitch(model, channel, version, current, to_revision, "succeeded", tuple(done), duration)


def revisions_of(lifecycle, model: str) -> RevisionState:
    lifecycle.repo.config(model)
    return RevisionStore(lifecycle.repo.store).load(model)[0]
