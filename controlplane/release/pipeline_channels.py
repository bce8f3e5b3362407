"""Promote, roll back and reconcile a pipeline on a channel: the channel document and its history are the model's
(`store/channels.py` transitions, saved by compare-and-swap), and the replicas move through the three-phase switch
of `release/pipeline.py` with `configs/<channel>.pbtxt` as the truth for the ensemble and every component.

`release/lifecycle.py` hands a name here when it is a pipeline; the operation is recorded exactly as a model's
(pending first, one history entry at the end), so `status`, `history`, `rollback` and `reconcile` read it unchanged.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING

from controlplane.errors import MlctlError
from controlplane.model.provenance import current_actor, utc_now
from controlplane.release.pipeline import (
    _ensemble_bytes,
    check_pipeline_version,
    components_of,
    config_key,
    switch_pipeline,
)
from controlplane.security.enforce import check_version as check_signature
from controlplane.store.channels import ModelState, Operation
from controlplane.triton.replicas import open_replicas

if TYPE_CHECKING:
    from controlplane.release.lifecycle import Lifecycle, SwitchReport


def switch_channel(lc: Lifecycle, name: str, channel: str, version: int, action: str, reason: str) -> SwitchReport:
    """Move `channel` of pipeline `name` to `version` on every replica of the channel; the channel moves only if all did."""
    from controlplane.release.lifecycle import SwitchReport

    check_pipeline_version(lc.repo, name, version)  # every component file against the manifest, before anything
    check_signature(lc.repo, name, version, channel, action)  # the channel's signature policy, as a model's: exit 6
    state, token = lc.channels.load(name)
    current = state.channels.get(channel)
    if current == version and state.pending is None:
        lc.say(f"{name}: channel {channel} already at version {version}")
        return SwitchReport(name, channel, action, current, version, "unchanged")
    replicas = open_replicas(lc.targets.replicas(channel), lc.control_key, lc.control_timeout_s)
    actor = current_actor()
    operation = Operation(op_id=uuid.uuid4().hex[:12], action=action, channel=channel, from_version=current,
                          to_version=version, reason=reason, user=actor["user"], host=actor["host"],
                          started_at=utc_now(), pid=os.getpid())
    started = time.monotonic()
    try:
        pending_state = state.begin(operation)
        pending_token = lc.channels.save(pending_state, token)  # ConflictError: another operation won
    except BaseException:
        _close(replicas)
        raise
    report = SwitchReport(name, channel, action, current, version, "succeeded")
    try:
        switched = switch_pipeline(lc.repo, name, version, replicas, lc.say, channel, lc.settle_timeout_s)
    except KeyboardInterrupt:
        lc.say(f"interrupted: {action} of pipeline {name} {channel} to version {version} left pending "
               f"(op {operation.op_id}); run 'mlctl reconcile {name}' to converge the replicas on version {current}")
        raise
    except MlctlError as exc:
        failed = pending_state.finish(operation.op_id, "failed", utc_now(), str(exc), time.monotonic() - started)
        lc.channels.save(failed, pending_token)
        raise
    finally:
        _close(replicas)
    report.replicas = [{"url": u, "seconds": s} for u, s in zip(switched.replicas, switched.replica_seconds)]
    report.duration_s = round(time.monotonic() - started, 3)
    done = pending_state.finish(operation.op_id, "succeeded", utc_now(), duration_s=report.duration_s)
    lc.channels.save(done, pending_token)
    lc.say(f"{name}: channel {channel} now at pipeline version {version} ({report.duration_s:.2f} s)")
    return report


def reconcile_pipeline(lc: Lifecycle, name: str, state: ModelState, changes: list[dict], errors: list[str]) -> None:
    """Bring the channel configs and every replica of each channel back to the channel's pipeline version."""
    for channel, version in sorted(state.channels.items()):
        try:
            components = components_of(lc.repo, name, version)
            expected = {config_key(name, channel): _ensemble_bytes(lc.repo, name, version),
                        **{config_key(c, channel): _component_config(lc, c, version) for c in components}}
            stale = [k for k, data in expected.items() if lc.repo.store.read_versioned(k)[0] != data]
            replicas = open_replicas(lc.targets.replicas(channel), lc.control_key, lc.control_timeout_s)
            try:
                drift = {r.url: sorted(r.served(name)) for r in replicas
                         if any(r.served(m) != {version} for m in [name, *components])}
                if stale or drift:
                    switch_pipeline(lc.repo, name, version, replicas, lc.say, channel, lc.settle_timeout_s)
                    changes.append({"model": name, "channel": channel, "what": f"pipeline converged on version {version}",
                                    "configs": stale, "replicas": drift})
            finally:
                _close(replicas)
        except MlctlError as exc:
            errors.append(f"pipeline {name} channel {channel}: {exc}")


def allow_versions(lc: Lifecycle, name: str, channel: str, versions: tuple[int, ...]) -> None:
    """Every component of pipeline `name` allows `versions` in its channel config, loaded on the channel's replicas
    (the first phase of a switch, held while a canary companion pins the candidate's components)."""
    from controlplane.release.pipeline import _load_everywhere, _set_policies

    components = sorted({c for v in versions for c in check_pipeline_version(lc.repo, name, v)})
    _set_policies(lc.repo, components, tuple(sorted(versions)), channel)
    replicas = open_replicas(lc.targets.replicas(channel), lc.control_key, lc.control_timeout_s)
    try:
        _load_everywhere(replicas, components, {})
    finally:
        _close(replicas)


def converge(lc: Lifecycle, name: str, channel: str) -> list[str]:
    """`channel`'s configs and replicas of pipeline `name` back on the channel's version; the problems found."""
    from dataclasses import replace

    state, _ = lc.channels.load(name)
    only = replace(state, channels={c: v for c, v in state.channels.items() if c == channel})
    changes: list[dict] = []
    errors: list[str] = []
    reconcile_pipeline(lc, name, only, changes, errors)
    return errors


def remove_channel_configs(lc: Lifecycle, name: str, channel: str) -> None:
    """The components' configs/<channel>.pbtxt (the ensemble's own goes with the model's code path)."""
    for comp in {c for v in lc.repo.versions(name) for c in components_of(lc.repo, name, v)}:
        lc.repo.store.delete(config_key(comp, channel))


def _component_config(lc: Lifecycle, comp: str, version: int) -> bytes:
    from controlplane.model import config as model_config
    from controlplane.model.config import VersionPolicy

    config = lc.repo.config(comp)
    model_config.apply_version_policy(config, VersionPolicy("specific", (version,)))
    return model_config.to_pbtxt(config).encode()


def _close(replicas) -> None:
    for replica in replicas:
        replica.close()
