"""The canary's companion: `<model>.canary`, its own Triton model holding a copy of the canary version.

Unversioned requests to `<model>` therefore keep reaching the stable version (the canary is never the highest
version of `<model>`). mlctl marks the folder it made (CANARY_MARK, written before anything else) and only ever
replaces or deletes a folder that carries the mark: a published model of that name (from before the suffix was
reserved) is refused, never touched, so no immutable version is lost.

A pipeline's companion is an ensemble: the canary version's own ensemble config (pinning that version of every
component), while the components on the channel's replicas allow both the stable and the canary versions. A request
therefore runs through the stable pipeline or the canary's, never a mix. When the companion goes, the components
converge again on the channel's version (release/pipeline_channels.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from controlplane.errors import ConflictError, MlctlError, NotFoundError, UsageError
from controlplane.release.canary.state import canary_model, now_iso
from controlplane.release.pipeline import is_pipeline
from controlplane.store.repository import CANARY_MARK, CANARY_SUFFIX, Repository


def companion_of(repo: Repository, name: str) -> str | None:
    """The model whose canary companion `name` is; None when `name` is no companion."""
    return name[: -len(CANARY_SUFFIX)] if repo.is_canary_companion(name) else None


def canary_version(repo: Repository, model: str) -> int | None:
    """The version `model`'s companion serves now; None when it has none."""
    name = canary_model(model)
    if not repo.is_canary_companion(name):
        return None
    try:
        versions = repo.versions(name)
    except NotFoundError:  # being installed: marked, no config yet
        return None
    return max(versions) if versions else None


def refuse_companion(repo: Repository, name: str) -> None:
    """UsageError when `name` is a canary companion, where a model is wanted."""
    model = companion_of(repo, name)
    if model is not None:
        raise UsageError(f"{name!r} is not a model: it is the canary companion of {model!r} (the version its canary serves, "
                         f"made by 'mlctl canary start')",
                         hint=f"see 'mlctl canary status {model}', or 'mlctl model versions {model}'")


class Companions:
    def __init__(self, lifecycle, say: Callable[[str], None]) -> None:
        self.lifecycle = lifecycle
        self.repo = lifecycle.repo
        self.store = lifecycle.repo.store
        self.say = say

    def check_free(self, model: str) -> None:
        """ConflictError when `<model>.canary` holds anything mlctl did not make as a companion."""
        name = canary_model(model)
        if self.store.list_dir(name) and not self.repo.is_canary_companion(name):
            raise ConflictError(
                f"cannot start a canary of {model!r}: {self.repo.uri}/{name} is a published model, not a canary companion "
                f"made by mlctl, and the canary would be served under that name; nothing was changed",
                hint=f"publish {name!r}'s versions under another name, remove it from the repository yourself, then start again",
            )

    def install(self, model: str, version: int, channel: str) -> None:
        """`<model>.canary` holding only this version (checked free first), loaded on the channel's replicas."""
        from controlplane.model import config as model_config

        self.check_free(model)
        name = canary_model(model)
        pipeline = is_pipeline(self.repo, model)
        config = self._pipeline_config(model, version, channel) if pipeline else self.repo.config(model)
        config.name = name
        model_config.apply_version_policy(config, model_config.VersionPolicy("specific", (version,)))
        self.store.delete_tree(name)  # a marked companion a previous canary left behind, or nothing
        mark = {"companion_of": model, "version": version, "channel": channel, "created_at": now_iso()}
        self.store.write_bytes(f"{name}/{CANARY_MARK}", (json.dumps(mark, indent=1) + "\n").encode())
        for rel in self.store.list_files(f"{model}/{version}"):
            self.store.write_bytes(f"{name}/{version}/{rel}", self.store.read_bytes(f"{model}/{version}/{rel}"))
        self.store.write_bytes(f"{name}/config.pbtxt", model_config.to_pbtxt(config).encode())
        self._load(name, version, channel, config)

    def _pipeline_config(self, model: str, version: int, channel: str):
        """The canary version's ensemble config, once the channel's replicas serve its components beside the stable's."""
        from controlplane.model import config as model_config
        from controlplane.release.pipeline_channels import allow_versions
        from controlplane.store.pipelines import ENSEMBLE_FILE

        stable = self.lifecycle.channels.load(model)[0].channels.get(channel)
        allow_versions(self.lifecycle, model, channel, tuple(v for v in (stable, version) if v is not None))
        text = self.store.read_bytes(f"{model}/{version}/{ENSEMBLE_FILE}").decode()
        return model_config.parse_pbtxt(text, f"{self.repo.uri}/{model}/{version}/{ENSEMBLE_FILE}")

    def _load(self, name: str, version: int, channel: str, config) -> None:
        from controlplane.model import config as model_config
        from controlplane.triton.replicas import open_replicas

        replicas = open_replicas(self.lifecycle.targets.replicas(channel), self.lifecycle.control_key)
        signature = model_config.signature_of(config, api=True)
        try:
            for replica in replicas:
                replica.load(name, model_config.to_json(config))
                replica.wait_serving(name, version, signature, self.lifecycle.settle_timeout_s)
        finally:
            for replica in replicas:
                replica.close()

    def remove(self, model: str, channel: str) -> None:
        """Unload the companion from the channel's replicas and delete its folder, if (and only if) it is marked."""
        from controlplane.triton.replicas import Replica

        name = canary_model(model)
        if not self.repo.is_canary_companion(name):
            if self.store.list_dir(name):
                self.say(f"{self.repo.uri}/{name} carries no canary mark ({CANARY_MARK}): left in place, not unloaded")
            return
        for url in self.lifecycle.targets.replicas(channel):
            try:
                replica = Replica(url, self.lifecycle.control_key)
                try:
                    replica.unload(name)
                finally:
                    replica.close()
            except MlctlError as exc:
                self.say(f"could not unload {name!r} from {url}: {exc}; it stops when that replica restarts")
        self.store.delete_tree(name)
        if is_pipeline(self.repo, model):  # its components back to the channel's version only
            from controlplane.release.pipeline_channels import converge

            for problem in converge(self.lifecycle, model, channel):
                self.say(problem)
