"""What the console reads and who may change things through it."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane import defaults
from controlplane.errors import MlctlError, UnavailableError
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.targets import Targets, load_targets


@dataclass(frozen=True)
class ConsoleSettings:
    repository: str  # a local folder or s3://bucket/prefix
    targets_file: str | None = None  # channel -> replicas (TOML); MLCTL_TARGETS_<CHANNEL> also count
    control_key: str | None = None  # for the replicas' model-control API
    prometheus_url: str | None = None  # None: serving figures are not shown, and the page says why
    log: str | None = None  # the gateway's prediction log, for the quality report
    admin_keys: tuple[str, ...] = ()  # empty: the console is read-only
    window: str = "1h"  # metrics and quality window
    replica_timeout_s: float = defaults.CONSOLE_REPLICA_TIMEOUT_S

    @property
    def read_only(self) -> bool:
        return not self.admin_keys

    def open_repository(self) -> Repository:
        """The repository, checked to exist: an unreadable one is an UnavailableError naming it and the fix."""
        try:
            return Repository(open_store(self.repository)).require()
        except UnavailableError:
            raise
        except MlctlError as exc:  # missing, or refused (credentials): the console has nothing to show
            hint = exc.hint or "check the path, or the S3 endpoint and credentials"
            raise UnavailableError(
                f"the model repository {self.repository} cannot be read: {exc.message}",
                hint=f"{hint}; restart the console with --repository (or MLCTL_REPOSITORY) naming a readable repository",
            ) from exc

    def targets(self) -> Targets:
        """Re-read each time: a changed targets file is seen without a restart."""
        return load_targets(self.targets_file)
