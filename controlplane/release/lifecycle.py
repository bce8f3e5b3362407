"""Promote, roll back, reconcile: move a channel to a version on every replica, one at a time, with no outage.

Design (the repository holds the desired state):
- `.mlctl/channels/<model>.json` says which version each channel serves, with the audit history. It is
  changed only by compare-and-swap, so one operation per model runs at a time.
- `<model>/configs/<channel>.pbtxt` is the model's config with `version_policy: specific [v]`. Replicas of a
  channel run with `--model-config-name=<channel>`, so a replica that restarts loads the promoted version.
- A switch loads the new policy on each replica in place (gRPC load with a config override, never an
  unload first), checks that the replica answers from the new version, then moves to the next replica.
  A failure reverts the replicas already switched and leaves the channel where it was. Ctrl-C does not
  revert (the user wants out now): the operation stays `pending`, and `mlctl reconcile` closes it at once
  (its process is gone) and converges the replicas on the channel's version.
- A promote creates a channel only when the targets configure it or `create_channel` says so, so a mistyped
  name is refused instead of becoming a channel; `remove_channel` takes one away, with a history entry.

Size (355 lines, over the ~300 the project aims for): the module is the one owner of the switch protocol —
the pending record, the per-replica switch and revert, the Ctrl-C path and reconcile share it and must change
together; pipelines already live apart (pipeline_channels.py). Splitting reconcile out is the next step.
"""

from __future__ import annotations

import difflib
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC

from controlplane.defaults import CONTROL_CALL_TIMEOUT_S
from controlplane.errors import (
    CheckFailedError,
    ConflictError,
    ControlKeyError,
    MlctlError,
    NotFoundError,
    ServerError,
    UsageError,
)
from controlplane.model import config as model_config
from controlplane.model.config import VersionPolicy
from controlplane.model.provenance import current_actor, utc_now
from controlplane.processes import process_exists
from controlplane.release.config_revisions import with_config_revision
from controlplane.release.pipeline import is_pipeline
from controlplane.security.enforce import check_version as check_signature
from controlplane.store.channel_store import ChannelStore
from controlplane.store.channels import (
    HistoryEntry,
    ModelState,
    Operation,
    check_channel,
)
from controlplane.store.repository import Repository
from controlplane.triton.replicas import Replica, open_replicas
from controlplane.triton.targets import Targets

Progress = Callable[[str], None]
CHANNEL_CONFIGS = "configs"
PENDING_STALE_S = 600.0


def channel_config_key(model: str, channel: str) -> str:
    return f"{model}/{CHANNEL_CONFIGS}/{channel}.pbtxt"


@dataclass
class SwitchReport:
    model: str
    channel: str
    action: str
    from_version: int | None
    to_version: int
    outcome: str  # succeeded | unchanged
    replicas: list[dict] = field(default_factory=list)  # url, seconds
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class Lifecycle:
    def __init__(
        self,
        repo: Repository,
        targets: Targets,
        control_key: str | None = None,
        progress: Progress | None = None,
        settle_timeout_s: float = 60.0,
        control_timeout_s: float = CONTROL_CALL_TIMEOUT_S,
    ) -> None:
        self.repo = repo
        self.targets = targets
        self.control_key = control_key
        self.channels = ChannelStore(repo.store)
        self.say = progress or (lambda _msg: None)
        self.settle_timeout_s = settle_timeout_s
        self.control_timeout_s = control_timeout_s  # a replica that does not finish a load within it has failed the switch

    # --- promote / rollback ----------------------------------------------------------------------
    def promote(self, model: str, version: int, channel: str, reason: str = "", create_channel: bool = False) -> SwitchReport:
        self.check_channel_known(model, channel, create_channel)
        return self._switch(model, channel, version, "promote", reason)

    def check_channel_known(self, model: str, channel: str, create_channel: bool = False) -> None:
        """Refuse a channel that neither the targets configure nor the model has, unless asked to create it:
        a typo must not become a channel."""
        check_channel(channel)
        if create_channel or channel in self.targets.channels:
            return
        state, _ = self.channels.load(model)
        if channel in state.channels:
            return
        self.repo.config(model)  # an unknown model says so first
        known = sorted(set(self.targets.channels) | set(state.channels))
        close = difflib.get_close_matches(channel, known, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(
            f"channel {channel!r} is not configured in the targets ({self.targets.source}) and model {model!r} "
            f"has no such channel (known: {', '.join(known) or 'none'}){guess}; nothing was changed",
            hint=f"to create a new channel, add --create-channel (its replicas: [channels.{channel}] in the targets)",
        )

    def remove_channel(self, model: str, channel: str, reason: str = "") -> HistoryEntry:
        """Take a channel away from a model: its state, its config file; recorded in the history."""
        check_channel(channel)
        self.repo.config(model)
        state, token = self.channels.load(model)
        removed = state.remove_channel(channel, reason, current_actor(), utc_now())  # NotFoundError first
        if self.targets.channels.get(channel):
            raise ConflictError(
                f"channel {channel!r} has replicas in the targets ({self.targets.source}); they would keep serving "
                f"{model!r} with nothing recording it",
                hint=f"take [channels.{channel}] out of the targets first, then remove the channel",
            )
        self.channels.save(removed, token)
        self.repo.store.delete(channel_config_key(model, channel))
        if is_pipeline(self.repo, model):  # and its components' channel configs
            from controlplane.release.pipeline_channels import remove_channel_configs

            remove_channel_configs(self, model, channel)
        self.say(f"{model}: channel {channel} removed (it held version {removed.history[-1].from_version})")
        return removed.history[-1]

    def rollback(self, model: str, channel: str = "production", to: int | None = None, reason: str = "") -> SwitchReport:
        state, _ = self.channels.load(model)
        check_channel(channel)
        if channel not in state.channels:
            self.repo.config(model)  # an unknown model says so first
            known = ", ".join(sorted(state.channels)) or "none"
            raise NotFoundError(f"model {model!r} has no channel {channel!r} to roll back (channels: {known})")
        target = to if to is not None else state.rollback_target(channel)
        return self._switch(model, channel, target, "rollback", reason)

    def _switch(self, model: str, channel: str, version: int, action: str, reason: str) -> SwitchReport:
        check_channel(channel)
        if is_pipeline(self.repo, model):  # a pipeline moves as one unit: release/pipeline_channels.py
            from controlplane.release.pipeline_channels import switch_channel

            return switch_channel(self, model, channel, version, action, reason)
        self.repo.manifest(model, version)  # NotFoundError for an unknown model or version
        problems = self.repo.verify(model, version)
        if problems:
            raise CheckFailedError(
                f"refusing to {action} {model!r} version {version}: its files do not match the manifest "
                f"({'; '.join(problems)})",
                hint="published versions are immutable; publish a new version instead",
            )
        check_signature(self.repo, model, version, channel, action)  # the channel's signature policy: exit 6
        state, token = self.channels.load(model)
        current = state.channels.get(channel)
        if current == version and state.pending is None:
            self.say(f"{model}: channel {channel} already at version {version}")
            return SwitchReport(model, channel, action, current, version, "unchanged")
        base = with_config_revision(self.repo, self.repo.config(model), channel)  # the channel's serving settings
        signature = model_config.signature_of(base, api=True)
        replicas = open_replicas(self.targets.replicas(channel), self.control_key, self.control_timeout_s)
        actor = current_actor()
        operation = Operation(
            op_id=uuid.uuid4().hex[:12],
            action=action,
            channel=channel,
            from_version=current,
            to_version=version,
            reason=reason,
            user=actor["user"],
            host=actor["host"],
            started_at=utc_now(),
            pid=os.getpid(),
        )
        started = time.monotonic()
        pending_state = state.begin(operation)
        pending_token = self.channels.save(pending_state, token)  # ConflictError: another operation won
        report = SwitchReport(model, channel, action, current, version, "succeeded")
        try:
            self.roll_out(model, replicas, base, version, signature, report.replicas, revert=(base, current),
                          aborted=f"{report.action} of {model!r} to version {version} aborted",
                          after=f"; channel {report.channel!r} unchanged at version {current}")
        except KeyboardInterrupt:
            # no revert and no write: the process is about to end, and reconcile closes an operation whose
            # process is gone, then converges the replicas on the channel's version
            self.say(f"interrupted: {action} of {model} {channel} to version {version} left pending (op {operation.op_id}); "
                     f"run 'mlctl reconcile {model}' to close it and converge the replicas on version {current}")
            raise
        except Exception as exc:
            detail = str(exc) if isinstance(exc, MlctlError) else f"{type(exc).__name__}: {exc}"
            failed = pending_state.finish(operation.op_id, "failed", utc_now(), detail, time.monotonic() - started)
            self.channels.save(failed, pending_token)
            raise
        finally:
            for replica in replicas:
                replica.close()
        report.duration_s = round(time.monotonic() - started, 3)
        done = pending_state.finish(operation.op_id, "succeeded", utc_now(), duration_s=report.duration_s)
        self.channels.save(done, pending_token)
        self.write_channel_config(model, channel, base, version)
        self.say(f"{model}: channel {channel} now at version {version} ({report.duration_s:.2f} s)")
        return report

    def roll_out(self, model: str, replicas: list[Replica], base, version: int, signature, done: list[dict], *,
                 revert: tuple, aborted: str, after: str = "", served: str = "") -> None:
        """Load `version` with `base`'s settings on each replica in turn and check it answers before the next.
        A replica that fails reverts the ones switched so far (and itself) to `revert` = (base, version or None to
        unload) and raises ServerError "{aborted}: replica URL failed: ...; reverted N replica(s){after}".
        Each switched replica is appended to `done` with its seconds."""
        new_config = model_config.to_json(self._channel_config(base, version))
        switched: list[Replica] = []
        for replica in replicas:
            t0 = time.monotonic()
            try:
                replica.load(model, new_config)
                replica.wait_serving(model, version, signature, self.settle_timeout_s)
            except Exception as exc:  # Ctrl-C is not a replica failure: it goes up as it is
                reverted = self._revert(model, *revert, signature, [*switched, replica])
                raise ServerError(f"{aborted}: replica {replica.url} failed: {exc}; {reverted}{after}") from exc
            switched.append(replica)
            done.append({"url": replica.url, "seconds": round(time.monotonic() - t0, 3)})
            self.say(f"{model}: replica {replica.url} serves version {version}{served}")

    def _revert(self, model, base, current, signature, replicas: list[Replica]) -> str:
        problems = []
        for replica in replicas:
            try:
                if current is None:
                    replica.unload(model)
                else:
                    replica.load(model, model_config.to_json(self._channel_config(base, current)))
                    replica.wait_serving(model, current, signature, self.settle_timeout_s)
            except MlctlError as exc:
                problems.append(f"{replica.url}: {exc}")
        if problems:
            return f"reverting failed on {'; '.join(problems)} (run 'mlctl reconcile')"
        return f"reverted {len(replicas)} replica(s)"

    def _channel_config(self, base, version: int):
        config = type(base)()
        config.CopyFrom(base)
        model_config.apply_version_policy(config, VersionPolicy("specific", (version,)))
        model_config.use_warmup_files(config, self.repo.warmup_files(base.name, version))  # its reference row
        return config

    def write_channel_config(self, model: str, channel: str, base, version: int) -> bool:
        """Bring configs/<channel>.pbtxt in line with the channel; True when it had to change."""
        text = model_config.to_pbtxt(self._channel_config(base, version)).encode()
        key = channel_config_key(model, channel)
        current, _ = self.repo.store.read_versioned(key)
        if current == text:
            return False
        self.repo.store.write_bytes(key, text)
        return True

    # --- reading ---------------------------------------------------------------------------------
    def history(self, model: str) -> list[HistoryEntry]:
        self.repo.config(model)
        return list(self.channels.load(model)[0].history)

    def status(self, model: str) -> dict:
        self.repo.config(model)
        state, _ = self.channels.load(model)
        channels = {}
        for channel in sorted(set(state.channels) | set(self.targets.channels)):
            version = state.channels.get(channel)
            replicas = []
            for url in self.targets.replicas(channel):
                replicas.append(self.replica_status(url, model, version))
            channels[channel] = {"version": version, "replicas": replicas}
        return {
            "model": model,
            "repository": self.repo.uri,
            "versions": self.repo.versions(model),
            "channels": channels,
            "pending": asdict(state.pending) if state.pending else None,
            "problems": state.inconsistencies(),
        }

    def replica_status(self, url: str, model: str, version: int | None, timeout_s: float = 120.0) -> dict:
        """What one replica serves against the channel's `version` (the console asks with a short `timeout_s`)."""
        try:
            replica = Replica(url, self.control_key, timeout_s=timeout_s)
            try:
                served = sorted(replica.served(model))
            finally:
                replica.close()
        except ControlKeyError as exc:  # it answered, so it is up; what it serves is hidden behind the key
            key = "wrong" if exc.key_given else "missing"
            return {"url": url, "reachable": True, "key": key, "served": [], "in_sync": False, "error": str(exc)}
        except MlctlError as exc:
            return {"url": url, "reachable": False, "key": None, "served": [], "in_sync": False, "error": str(exc)}
        return {"url": url, "reachable": True, "key": "ok", "served": served, "in_sync": version is not None and served == [version]}

    # --- reconcile -------------------------------------------------------------------------------
    def reconcile(self, models: list[str] | None = None, force: bool = False) -> dict:
        """Converge every replica (and channel config file) on the desired state; report what differed."""
        names = models or self.channels.models()
        changes: list[dict] = []
        errors: list[str] = []
        for model in names:
            state, token = self.channels.load(model)
            if state.pending is not None:
                if not (force or self._pending_dead(state.pending)):
                    errors.append(f"{model}: an operation is still running ({state.pending.action} to {state.pending.to_version}); not touched")
                    continue
                state = self._close_interrupted(state, token)
                changes.append({"model": model, "what": "interrupted operation closed", "op": state.history[-1].op_id})
            if is_pipeline(self.repo, model):  # its channel configs and replicas: release/pipeline_channels.py
                from controlplane.release.pipeline_channels import reconcile_pipeline

                reconcile_pipeline(self, model, state, changes, errors)
                continue
            base = self.repo.config(model)
            signature = model_config.signature_of(base, api=True)
            for channel, version in sorted(state.channels.items()):
                channel_base = with_config_revision(self.repo, base, channel)
                if self.write_channel_config(model, channel, channel_base, version):
                    changes.append({"model": model, "channel": channel, "what": f"config file set to version {version}"})
                for url in self.targets.replicas(channel):
                    try:
                        replica = Replica(url, self.control_key, self.control_timeout_s)
                        try:
                            replica.wait_settled(model, self.settle_timeout_s)
                            served = replica.served(model)
                            if served != {version}:
                                replica.load(model, model_config.to_json(self._channel_config(channel_base, version)))
                                replica.wait_serving(model, version, signature, self.settle_timeout_s)
                                changes.append({"model": model, "channel": channel, "replica": url, "was": sorted(served), "now": version})
                        finally:
                            replica.close()
                    except MlctlError as exc:
                        errors.append(f"{model} on {url}: {exc}")
        return {"changes": changes, "errors": errors}

    @staticmethod
    def _pending_dead(op: Operation) -> bool:
        from datetime import datetime

        if op.host == socket.gethostname() and op.pid and not process_exists(op.pid):
            return True
        age = (datetime.now(UTC) - datetime.fromisoformat(op.started_at)).total_seconds()
        return age > PENDING_STALE_S

    def _close_interrupted(self, state: ModelState, token: str | None) -> ModelState:
        op = state.pending
        closed = state.finish(op.op_id, "interrupted", utc_now(), f"closed by reconcile; channel stays at {state.channels.get(op.channel)}")
        self.channels.save(closed, token)
        return closed
