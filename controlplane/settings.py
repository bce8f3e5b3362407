"""Global settings, read once from options and MLCTL_* environment variables by the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controlplane.errors import NotFoundError, UsageError
from controlplane.triton.tls import ClientTls

DEFAULT_REPOSITORY = "model_repository"
DEFAULT_HOME = "~/.mlctl"
DEFAULT_TARGETS = "mlctl.toml"


@dataclass(frozen=True)
class Settings:
    repository: str = DEFAULT_REPOSITORY  # a local path or s3://bucket/prefix
    home: Path = Path(DEFAULT_HOME).expanduser()  # managed servers' state files and logs
    targets_file: str | None = None  # channel -> replicas (TOML)
    control_key: str | None = None  # key for a restricted model-repository API
    log_format: str = "text"  # text | json: the one event each control-plane action writes to stderr
    tls: ClientTls | None = None  # TLS towards Triton's gRPC endpoints (None: plain text)

    @classmethod
    def create(
        cls,
        repository: str | None,
        home: str | None,
        targets: str | None = None,
        control_key: str | None = None,
        control_key_file: str | None = None,
        log_format: str = "text",
        tls: tuple[str | None, str | None, str | None] = (None, None, None),
    ) -> Settings:
        if log_format not in ("text", "json"):
            raise UsageError(f"log format {log_format!r} must be 'text' or 'json'")
        if targets is None and Path(DEFAULT_TARGETS).is_file():
            targets = DEFAULT_TARGETS
        return cls(
            repository=repository or DEFAULT_REPOSITORY,
            home=Path(home or DEFAULT_HOME).expanduser(),
            targets_file=targets,
            control_key=control_key or read_key_file(control_key_file),
            log_format=log_format,
            tls=ClientTls.create(*tls),
        )


def read_key_file(path: str | None) -> str | None:
    if not path:
        return None
    try:
        key = Path(path).read_text().strip()
    except FileNotFoundError:
        raise NotFoundError(f"control key file {path} not found") from None
    except OSError as exc:
        raise UsageError(f"control key file {path} cannot be read: {exc}") from exc
    if not key:
        raise UsageError(f"control key file {path} is empty")
    return key



def read_toml(path: str | Path, what: str) -> dict:
    """A TOML file the user names (`what` says which, for the message): NotFoundError when missing, UsageError
    when it does not parse."""
    import tomllib

    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"{what} {file} not found")
    try:
        return tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {file} is not valid TOML: {exc}") from exc
