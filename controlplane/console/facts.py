"""Every fact the console shows, from the library: the repository, channel state and history, what each replica
serves (asked concurrently, each with a short deadline), and the canary. Values in, values out: the views
render them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from controlplane.console.settings import ConsoleSettings
from controlplane.model import config as model_config
from controlplane.release.canary.state import CanaryState, CanaryStore
from controlplane.release.lifecycle import Lifecycle
from controlplane.store.channels import ModelState
from controlplane.store.repository import REFERENCE

MAX_REPLICA_THREADS = 32


@dataclass(frozen=True)
class ReplicaCell:
    url: str
    state: str  # in sync | drift | unreachable | timed out | key refused | no version
    served: tuple[int, ...]
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "in sync"


@dataclass(frozen=True)
class ChannelRow:
    name: str
    version: int | None
    replicas: tuple[ReplicaCell, ...]


@dataclass
class ModelPage:
    name: str
    format: str
    version_policy: str
    versions: list[dict]
    channels: list[ChannelRow]
    history: list[dict]
    pending: dict | None
    problems: list[str]
    canary: CanaryState | None
    config_text: str = ""
    channel_of: dict[int, list[str]] = field(default_factory=dict)  # version -> channels holding it


def cell(status: dict, version: int | None) -> ReplicaCell:
    """One replica's answer (Lifecycle.replica_status) as the console names it."""
    served = tuple(status.get("served") or ())
    error = status.get("error") or ""
    if status.get("key") in ("missing", "wrong"):
        return ReplicaCell(status["url"], "key refused", served, f"{status['key']} key: {error}")
    if not status.get("reachable"):
        timed_out = "deadline" in error.lower()
        return ReplicaCell(status["url"], "timed out" if timed_out else "unreachable", served, error)
    if version is None:
        return ReplicaCell(status["url"], "no version", served, "the channel holds no version yet")
    if status.get("in_sync"):
        return ReplicaCell(status["url"], "in sync", served)
    return ReplicaCell(status["url"], "drift", served, f"serves {list(served) or 'nothing'}, the channel holds {version}")


def version_row(manifest, problems: list[str] | None = None) -> dict:
    """A version's manifest as the page shows it."""
    model_files = {k: v for k, v in manifest.files.items() if k != REFERENCE}
    main = next(iter(sorted(model_files)), None)
    parity = manifest.parity or {}
    return {
        "version": manifest.version,
        "format": manifest.format,
        "created_at": manifest.created_at,
        "file": main,
        "sha256": model_files[main]["sha256"] if main else None,
        "size_bytes": sum(int(f["size"]) for f in manifest.files.values()),
        "parity": parity.get("passed"),
        "parity_detail": parity,
        "metadata": manifest.metadata,
        "inputs": [spec.describe(manifest.signature.batched) for spec in manifest.signature.inputs],
        "outputs": [spec.describe(manifest.signature.batched) for spec in manifest.signature.outputs],
        "max_batch_size": manifest.signature.to_dict().get("max_batch_size"),
        "provenance": manifest.provenance,
        "reference": REFERENCE in manifest.files,
        # manifest signing (the security work) is not in this build: the page says so rather than guess
        "signing": manifest.provenance.get("signing") or manifest.metadata.get("signing"),
    }


class Facts:
    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings

    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.settings.open_repository(), self.settings.targets(), self.settings.control_key)

    # --- the models page -------------------------------------------------------------------------
    def models(self) -> list[dict]:
        repo = self.settings.open_repository()
        lc = Lifecycle(repo, self.settings.targets(), self.settings.control_key)
        canaries = CanaryStore(repo.store)
        rows = []
        for name in sorted(repo.model_names()):
            summary = repo.summary(name)
            state, _ = lc.channels.load(name)
            canary, _ = canaries.load(name)
            last = state.history[-1] if state.history else None
            rows.append({"name": name, "format": summary.format, "versions": list(summary.versions),
                         "channels": dict(sorted(state.channels.items())), "pending": state.pending is not None,
                         "canary": canary if canary is not None and canary.running else None,
                         "last": asdict(last) if last else None})
        return rows

    # --- one model -------------------------------------------------------------------------------
    def model(self, name: str) -> ModelPage:
        lc = self.lifecycle()
        repo = lc.repo
        config = repo.config(name)  # NotFoundError for an unknown model: a 404 page
        summary = repo.summary(name)
        state, _ = lc.channels.load(name)
        versions = [version_row(repo.manifest(name, v)) for v in reversed(summary.versions)]
        canary, _ = CanaryStore(repo.store).load(name)
        holders: dict[int, list[str]] = {}
        for channel, version in sorted(state.channels.items()):
            holders.setdefault(version, []).append(channel)
        return ModelPage(
            name=name, format=summary.format, version_policy=summary.version_policy, versions=versions,
            channels=self.channels(lc, name, state), history=[asdict(e) for e in reversed(state.history)],
            pending=asdict(state.pending) if state.pending else None, problems=state.inconsistencies(), canary=canary,
            config_text=model_config.to_pbtxt(config), channel_of=holders,
        )

    def channels(self, lc: Lifecycle, name: str, state: ModelState) -> list[ChannelRow]:
        """Each channel's desired version against every replica; all replicas are asked at once, each with
        the console's short deadline, so a hung one costs its own cell that long and no more."""
        names = sorted(set(state.channels) | set(lc.targets.channels))
        asks = [(channel, url) for channel in names for url in lc.targets.replicas(channel)]
        timeout = self.settings.replica_timeout_s
        answers: dict[tuple[str, str], dict] = {}
        if asks:
            with ThreadPoolExecutor(max_workers=min(MAX_REPLICA_THREADS, len(asks))) as pool:
                futures = {ask: pool.submit(lc.replica_status, ask[1], name, state.channels.get(ask[0]), timeout)
                           for ask in asks}
                answers = {ask: future.result() for ask, future in futures.items()}
        return [ChannelRow(channel, state.channels.get(channel),
                           tuple(cell(answers[(channel, url)], state.channels.get(channel))
                                 for url in lc.targets.replicas(channel)))
                for channel in names]

    # --- two versions ----------------------------------------------------------------------------
    def diff(self, name: str, a: int, b: int) -> dict:
        repo = self.settings.open_repository()
        config = repo.config(name)
        left, right = version_row(repo.manifest(name, a)), version_row(repo.manifest(name, b))
        rows = []
        for key in _keys(left, right):
            va, vb = _dig(left, key), _dig(right, key)
            rows.append({"key": key, "a": va, "b": vb, "same": va == vb})
        return {"name": name, "a": a, "b": b, "rows": rows, "config_text": model_config.to_pbtxt(config),
                "versions": repo.versions(name)}


def _flatten(prefix: str, value) -> list[str]:
    if isinstance(value, dict) and value:
        return [k for key, item in sorted(value.items()) for k in _flatten(f"{prefix}.{key}", item)]
    return [prefix]


DIFF_FIELDS = ("format", "created_at", "file", "sha256", "size_bytes", "inputs", "outputs", "max_batch_size", "parity_detail",
               "metadata", "provenance", "reference", "signing")


def _keys(left: dict, right: dict) -> list[str]:
    keys: list[str] = []
    for name in DIFF_FIELDS:
        for key in _flatten(name, left.get(name)) + _flatten(name, right.get(name)):
            if key not in keys:
                keys.append(key)
    return keys


def _dig(row: dict, key: str):
    value = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value
