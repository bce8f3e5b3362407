"""Switching a pipeline between versions on live replicas, as one unit and with no mixed versions.

Triton reloads an ensemble's components from the repository whenever it loads the ensemble, so a config override
on a component would be undone by the ensemble's load. The repository's configs are therefore the truth, and the
switch moves them (and every replica after them) through three phases, each on every replica before the next:
  1. every component's config allows both versions (`specific [old, new]`); each replica loads them, the old
     versions keep serving;
  2. the ensemble's config becomes the new version's own (`<P>/<v>/ensemble.pbtxt`, pinning version `new` of every
     component); Triton swaps it in when ready, so a request runs through the old ensemble (old components) or
     the new one (new components), never a mix;
  3. every component's config allows only the new version; each replica drops the old ones.
Before anything changes, every component file of the target version is checked against the pipeline's manifest.
A replica that restarts at any point loads a consistent pipeline: the ensemble it finds pins versions its
components' configs allow.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controlplane.errors import CheckFailedError, UsageError
from controlplane.model import config as model_config
from controlplane.model.config import VersionPolicy
from controlplane.store.pipelines import ENSEMBLE_FILE, verify_pipeline
from controlplane.store.repository import CONFIG, Repository
from controlplane.triton.replicas import Replica

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PipelineSwitch:
    pipeline: str
    from_version: int | None
    to_version: int
    replicas: tuple[str, ...]
    seconds: float

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline, "from": self.from_version, "to": self.to_version,
                "replicas": list(self.replicas), "seconds": round(self.seconds, 3)}


def components_of(repo: Repository, name: str, version: int) -> list[str]:
    manifest = repo.manifest(name, version)
    parts = manifest.metadata.get("pipeline", {}).get("components")
    if manifest.format != "ensemble" or not parts:
        raise UsageError(f"{name!r} is a model, not a pipeline", hint="use 'mlctl promote' for models")
    return [parts[r]["model"] for r in ("pre", "model", "post") if r in parts]


def switch_pipeline(repo: Repository, name: str, version: int, replicas: Sequence[Replica],
                    progress: Progress | None = None) -> PipelineSwitch:
    say = progress or (lambda _msg: None)
    components = components_of(repo, name, version)
    problems = verify_pipeline(repo, name, version)
    if problems:
        raise CheckFailedError(f"version {version} of pipeline {name!r} does not match its manifest: {'; '.join(problems)}",
                               hint="nothing was switched; publish a fresh version")
    ensemble = repo.store.read_bytes(f"{name}/{version}/{ENSEMBLE_FILE}")
    model_config.parse_pbtxt(ensemble.decode(), f"{repo.uri}/{name}/{version}/{ENSEMBLE_FILE}")
    olds = {replica.url: replica.served(name) for replica in replicas}
    everything = set().union(*olds.values()) | {version}
    start = time.monotonic()
    _set_policies(repo, components, tuple(sorted(everything)))  # 1. both versions of every component
    _load_everywhere(replicas, components)
    repo.store.write_bytes(f"{name}/{CONFIG}", ensemble)  # 2. the ensemble pinned to the new version
    _load_everywhere(replicas, [name])
    _set_policies(repo, components, (version,))  # 3. only the new version
    _load_everywhere(replicas, components)
    elapsed = time.monotonic() - start
    say(f"{name}: {sorted(everything - {version}) or '-'} -> {version} on {len(replicas)} replica(s) in {elapsed:.2f} s")
    old = set().union(*olds.values())
    return PipelineSwitch(name, max(old) if old else None, version, tuple(r.url for r in replicas), elapsed)


def _set_policies(repo: Repository, components: list[str], versions: tuple[int, ...]) -> None:
    for comp in components:
        config = repo.config(comp)
        model_config.apply_version_policy(config, VersionPolicy("specific", versions))
        repo.store.write_bytes(f"{comp}/{CONFIG}", model_config.to_pbtxt(config).encode())


def _load_everywhere(replicas: Sequence[Replica], models: list[str]) -> None:
    for replica in replicas:
        for model in models:
            replica.load(model)
