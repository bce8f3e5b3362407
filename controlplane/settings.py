"""Global settings, read once from options and MLCTL_* environment variables by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_REPOSITORY = "model_repository"
DEFAULT_HOME = "~/.mlctl"


@dataclass(frozen=True)
class Settings:
    repository: str = DEFAULT_REPOSITORY  # a local path (S3 URIs come with the lifecycle work)
    home: Path = Path(DEFAULT_HOME).expanduser()  # managed servers' state files and logs

    @classmethod
    def create(cls, repository: str | None, home: str | None) -> Settings:
        return cls(
            repository=repository or DEFAULT_REPOSITORY,
            home=Path(home or DEFAULT_HOME).expanduser(),
        )
