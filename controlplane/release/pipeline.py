"""Switching a pipeline between versions on live replicas, as one unit and with no mixed versions.

Triton reloads an ensemble's components from the repository whenever it loads the ensemble, so a config override
on a component would be undone by the ensemble's load. The repository's configs are therefore the truth, and the
switch moves them (and every replica after them) through three phases, each on every replica, one replica at a
time, before the next:
  1. every component's config allows both versions (`specific [old, new]`); each replica loads them, the old
     versions keep serving;
  2. the ensemble's config becomes the new version's own (`<P>/<v>/ensemble.pbtxt`, pinning version `new` of every
     component); Triton swaps it in when ready, so a request runs through the old ensemble (old components) or
     the new one (new components), never a mix;
  3. every component's config allows only the new version; each replica drops the old ones.
The configs are `config.pbtxt` for plain servers, or `configs/<channel>.pbtxt` for a channel's replicas (started
with `--model-config-name=<channel>`), so one channel's switch never touches what another channel loads.
Before anything changes, every component file of the target version is checked against the pipeline's manifest.
A failure in any phase runs the same three phases back to the old version (or unloads a pipeline that was not
served before) and restores the config files. A replica that restarts at any point loads a consistent pipeline:
the ensemble it finds pins versions its components' configs allow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controlplane.errors import CheckFailedError, MlctlError, ServerError, UsageError
from controlplane.model import config as model_config
from controlplane.model.config import VersionPolicy
from controlplane.store.pipelines import ENSEMBLE_FILE, verify_pipeline
from controlplane.store.repository import CONFIG, Repository
from controlplane.triton.replicas import Replica

Progress = Callable[[str], None]
CHANNEL_CONFIGS = "configs"  # the same place release/lifecycle.py writes a model's channel config


@dataclass(frozen=True)
class PipelineSwitch:
    pipeline: str
    from_version: int | None
    to_version: int
    replicas: tuple[str, ...]
    seconds: float
    replica_seconds: tuple[float, ...] = ()  # time each replica spent loading, over the three phases

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "from": self.from_version, "to": self.to_version,
                "replicas": list(self.replicas), "seconds": round(self.seconds, 3)}


def is_pipeline(repo: Repository, name: str) -> bool:
    """True when `name` in the repository is a pipeline's ensemble (False for a model or an unknown name)."""
    if CONFIG not in repo.store.list_dir(name):
        return False
    return repo.config(name).platform == "ensemble"


def config_key(name: str, channel: str | None) -> str:
    """Where a replica reads `name`'s config: config.pbtxt, or configs/<channel>.pbtxt on a channel's replica."""
    return f"{name}/{CONFIG}" if channel is None else f"{name}/{CHANNEL_CONFIGS}/{channel}.pbtxt"


def components_of(repo: Repository, name: str, version: int) -> list[str]:
    manifest = repo.manifest(name, version)
    parts = manifest.metadata.get("pipeline", {}).get("components")
    if manifest.format != "ensemble" or not parts:
        raise UsageError(f"{name!r} is a model, not a pipeline", hint="use 'mlctl promote' for models")
    return [parts[r]["model"] for r in ("pre", "model", "post") if r in parts]


def check_pipeline_version(repo: Repository, name: str, version: int) -> list[str]:
    """The components of `version`, once every file of it matches the pipeline's manifest (CheckFailedError)."""
    components = components_of(repo, name, version)
    problems = verify_pipeline(repo, name, version)
    if problems:
        raise CheckFailedError(f"version {version} of pipeline {name!r} does not match its manifest: {'; '.join(problems)}",
                               hint="nothing was switched; publish a fresh version")
    return components


def switch_pipeline(repo: Repository, name: str, version: int, replicas: Sequence[Replica],
                    progress: Progress | None = None, channel: str | None = None,
                    settle_timeout_s: float = 60.0) -> PipelineSwitch:
    """Move `replicas` to `version` of pipeline `name` in three phases; on failure, back to what they served."""
    say = progress or (lambda _msg: None)
    components = check_pipeline_version(repo, name, version)
    ensemble = _ensemble_bytes(repo, name, version)
    olds = {replica.url: replica.served(name) for replica in replicas}
    old = set().union(*olds.values())
    saved = {key: repo.store.read_versioned(key)[0] for key in (config_key(m, channel) for m in [name, *components])}
    seconds = {replica.url: 0.0 for replica in replicas}
    start = time.monotonic()
    try:
        _phases(repo, name, components, ensemble, old | {version}, version, replicas, channel, seconds)
        _wait_serving(repo, name, components, version, replicas, settle_timeout_s)
    except MlctlError as exc:
        back = _revert(repo, name, components, max(old) if old else None, replicas, channel, saved, settle_timeout_s)
        raise ServerError(f"switch of pipeline {name!r} to version {version} aborted: {exc}; {back}") from exc
    elapsed = time.monotonic() - start
    say(f"{name}: {sorted(old - {version}) or '-'} -> {version} on {len(replicas)} replica(s) in {elapsed:.2f} s")
    return PipelineSwitch(name, max(old) if old else None, version, tuple(r.url for r in replicas), elapsed,
                          tuple(round(seconds[r.url], 3) for r in replicas))


def _ensemble_bytes(repo: Repository, name: str, version: int) -> bytes:
    ensemble = repo.store.read_bytes(f"{name}/{version}/{ENSEMBLE_FILE}")
    model_config.parse_pbtxt(ensemble.decode(), f"{repo.uri}/{name}/{version}/{ENSEMBLE_FILE}")
    return ensemble


def _phases(repo, name, components, ensemble: bytes, both: set[int], version: int, replicas, channel, seconds) -> None:
    _set_policies(repo, components, tuple(sorted(both)), channel)  # 1. both versions of every component
    _load_everywhere(replicas, components, seconds)
    for replica in replicas:
        for comp in components:
            if version not in replica.served(comp):
                where = f"configs/{channel}.pbtxt" if channel else CONFIG
                raise ServerError(f"replica {replica.url} did not load version {version} of {comp!r} from its {where}",
                                  hint=f"a channel's replicas must run with --channel {channel}" if channel else None)
    repo.store.write_bytes(config_key(name, channel), ensemble)  # 2. the ensemble pinned to the new version
    _load_everywhere(replicas, [name], seconds)
    _drain_old(replicas, components, version)  # requests the old ensemble took still need the old components
    _set_policies(repo, components, (version,), channel)  # 3. only the new version
    _load_everywhere(replicas, components, seconds)


def _drain_old(replicas, components, version: int) -> None:
    """Until the components' other versions have executed nothing for PIPELINE_DRAIN_QUIET_S on every replica (at most
    PIPELINE_DRAIN_MAX_S): a request the old ensemble accepted just before its swap reaches its steps afterwards,
    and unloading a step's version then would fail it."""
    from controlplane.defaults import PIPELINE_DRAIN_MAX_S, PIPELINE_DRAIN_QUIET_S

    def old_counts() -> dict:
        return {(r.url, comp): {v: n for v, n in r.answered(comp).items() if v != version} for r in replicas for comp in components}

    try:
        deadline, last = time.monotonic() + PIPELINE_DRAIN_MAX_S, old_counts()
        while time.monotonic() < deadline:
            time.sleep(PIPELINE_DRAIN_QUIET_S)
            now = old_counts()
            if now == last:
                return
            last = now
    except MlctlError:  # statistics refused or unanswered: a fixed grace instead (phase 3 then meets any fault)
        time.sleep(PIPELINE_DRAIN_QUIET_S)


def _wait_serving(repo, name, components, version, replicas, timeout_s: float) -> None:
    signature = repo.manifest(name, version).signature
    for replica in replicas:
        deadline = time.monotonic() + timeout_s
        for comp in components:
            while replica.served(comp) != {version}:
                if time.monotonic() > deadline:
                    raise ServerError(f"replica {replica.url} still serves {sorted(replica.served(comp))} of {comp!r}, "
                                      f"not only version {version}")
                time.sleep(0.02)
        replica.wait_serving(name, version, signature, max(deadline - time.monotonic(), 1.0))


def _revert(repo, name, components, old: int | None, replicas, channel, saved: dict, timeout_s: float) -> str:
    """Back to `old` on every replica (or nothing served when there was none), and the config files as they were."""
    try:
        if old is None:
            for replica in replicas:
                for model in [name, *components]:
                    replica.unload(model)
        else:
            current = {v for r in replicas for v in r.served(name)} | {old}
            _phases(repo, name, components, _ensemble_bytes(repo, name, old), current, old, replicas, channel, {})
            _wait_serving(repo, name, components, old, replicas, timeout_s)
    except MlctlError as exc:
        _restore(repo, saved)
        return f"reverting failed too ({exc}); run 'mlctl reconcile {name}'"
    _restore(repo, saved)
    return f"reverted {len(replicas)} replica(s) to {old if old is not None else 'nothing served'}"


def _restore(repo: Repository, saved: dict[str, bytes | None]) -> None:
    for key, data in saved.items():
        if data is None:
            repo.store.delete(key)
        else:
            repo.store.write_bytes(key, data)


def _set_policies(repo: Repository, components: list[str], versions: tuple[int, ...], channel: str | None) -> None:
    for comp in components:
        config = repo.config(comp)
        model_config.apply_version_policy(config, VersionPolicy("specific", versions))
        repo.store.write_bytes(config_key(comp, channel), model_config.to_pbtxt(config).encode())


def _load_everywhere(replicas: Sequence[Replica], models: list[str], seconds: dict) -> None:
    for replica in replicas:
        t0 = time.monotonic()
        for model in models:
            replica.load(model)
        seconds[replica.url] = seconds.get(replica.url, 0.0) + time.monotonic() - t0
