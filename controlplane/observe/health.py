"""`mlctl health`: is every part up? Servers live and ready, their models ready, repository and Prometheus reachable."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

from controlplane.errors import ControlKeyError, MlctlError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_replica(url: str, control_key: str | None) -> list[Check]:
    """Live and ready (open endpoints), then each loaded model through the model-repository API. A refused
    control key fails its own check and leaves the live/ready answers standing."""
    from controlplane.triton.replicas import Replica

    try:
        replica = Replica(url, control_key)
    except MlctlError as exc:
        return [Check(f"triton {url}", False, str(exc))]
    try:
        live = replica.live()
        ready = replica.ready()
        checks = [Check(f"triton {url} live", live, "live" if live else "not live"),
                  Check(f"triton {url} ready", ready, "ready" if ready else "not ready")]
        try:
            index = replica.index()
        except ControlKeyError as exc:
            which = "wrong control key" if exc.key_given else "no control key given"
            return [*checks, Check(f"triton {url} control API", False, f"refused ({which}): models not listed; {exc.hint}")]
        checks.append(Check(f"triton {url} control API", True, "answered"))
        for entry in index:
            if "version" not in entry:
                continue  # listed in the repository (Triton lists every folder, .mlctl too) but not loaded here
            name = f"model {entry['name']} v{entry['version']} on {url}"
            state = entry.get("state", "")
            checks.append(Check(name, state == "READY", state + (f": {entry['reason']}" if entry.get("reason") else "")))
        return checks
    except MlctlError as exc:
        return [Check(f"triton {url}", False, str(exc))]
    finally:
        replica.close()


def check_repository(uri: str) -> Check:
    from controlplane.store import open_store
    from controlplane.store.repository import Repository

    try:
        models = Repository(open_store(uri)).model_names()
        return Check(f"repository {uri}", True, f"{len(models)} model(s)")
    except MlctlError as exc:
        return Check(f"repository {uri}", False, str(exc))


def check_prometheus(url: str) -> Check:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/-/ready", timeout=5) as response:
            return Check(f"prometheus {url}", response.status == 200, "ready")
    except (urllib.error.URLError, OSError) as exc:
        return Check(f"prometheus {url}", False, f"not reachable: {exc}")


def run_checks(replicas: list[str], repository: str | None, prometheus: str | None, control_key: str | None) -> list[Check]:
    checks: list[Check] = []
    for url in replicas:
        checks += check_replica(url, control_key)
    if repository:
        checks.append(check_repository(repository))
    if prometheus:
        checks.append(check_prometheus(prometheus))
    return checks
