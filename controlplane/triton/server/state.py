"""The state file of a managed server: pid, ports, log path. One JSON file per server name."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from controlplane.errors import UsageError


@dataclass(frozen=True)
class ServerState:
    name: str
    runtime: str  # local | docker
    pid: int | None  # local process id
    container: str | None  # docker container id
    http_port: int
    grpc_port: int
    metrics_port: int
    repository: str
    log_path: str
    started_at: str
    command: list[str] = field(default_factory=list)
    channel: str | None = None  # the channel it is a replica of (--model-config-name), None for a plain server
    grpc_tls: str | None = None  # None: plain text; "tls" or "mutual"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def to_dict(self) -> dict:
        return asdict(self)


class StateFiles:
    """Where managed servers keep their state: <home>/servers/<name>.json and <name>.log."""

    def __init__(self, home: Path) -> None:
        self.dir = Path(home) / "servers"

    def path(self, name: str) -> Path:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"server name {name!r} must be letters, digits, '-' or '_'")
        return self.dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.dir / f"{name}.log"

    def work_dir(self, name: str) -> Path:
        return self.dir / name

    def read(self, name: str) -> ServerState | None:
        path = self.path(name)
        try:
            return ServerState(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise UsageError(f"server state file {path} is corrupt ({exc}); delete it") from exc

    def write(self, state: ServerState) -> None:
        path = self.path(state.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state.to_dict(), indent=2))
        os.replace(tmp, path)

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.is_dir() else []
