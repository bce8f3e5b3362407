"""Which Triton replicas serve each channel: a TOML file and MLCTL_TARGETS_<CHANNEL> variables.

    # mlctl.toml
    [channels.production]
    replicas = ["10.0.0.5:8001", "10.0.0.6:8001"]     # gRPC endpoints
    [channels.staging]
    replicas = ["127.0.0.1:8101"]

`MLCTL_TARGETS_PRODUCTION=host:port,host:port` replaces the file's list for that channel. An entry
`dns:NAME:PORT` stands for every address NAME resolves to (a Kubernetes headless Service gives one per
ready pod); it is resolved each time the replicas are asked for.

A channel whose replicas serve gRPC over TLS with another CA (or want another client certificate) than the global
MLCTL_TLS_* settings names its own: `tls_ca = "ca.pem"`, `tls_client_cert`, `tls_client_key` beside `replicas`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.errors import UnavailableError, UsageError
from controlplane.settings import read_toml
from controlplane.store.channels import check_channel
from controlplane.triton import tls as client_tls

ENV_PREFIX = "MLCTL_TARGETS_"


@dataclass(frozen=True)
class Targets:
    channels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = "(none)"
    tls: dict[str, client_tls.ClientTls] = field(default_factory=dict)  # a channel's own TLS towards its replicas

    def replicas(self, channel: str) -> tuple[str, ...]:
        out: list[str] = []
        for endpoint in self.channels.get(channel, ()):
            out += resolve(endpoint) if endpoint.startswith("dns:") else [endpoint]
        endpoints = tuple(dict.fromkeys(out))
        if channel in self.tls:  # every client opened towards these endpoints uses the channel's TLS
            client_tls.add_endpoints(self.tls[channel], endpoints)
        return endpoints


def resolve(endpoint: str) -> list[str]:
    """`dns:NAME:PORT` -> one `address:port` per address of NAME (sorted, IPv4 first)."""
    import socket

    host, _, port = endpoint.removeprefix("dns:").rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise UnavailableError(f"replicas {endpoint!r}: {host} does not resolve ({exc})") from exc
    addresses = sorted({info[4][0] for info in infos}, key=lambda a: (":" in a, a))
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


def _endpoints(value, where: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise UsageError(f"{where}: replicas must be a list of 'host:port' strings")
    endpoints = tuple(i.strip() for i in items if i.strip())
    for endpoint in endpoints:
        host, sep, port = endpoint.removeprefix("dns:").rpartition(":")
        if not sep or not host or not port.isdigit():
            raise UsageError(f"{where}: replica {endpoint!r} is not host:port")
    return endpoints


def load_targets(path: str | None, env: Mapping[str, str] | None = None) -> Targets:
    """Targets from `path` (must exist when given) and the environment."""
    env = os.environ if env is None else env
    channels: dict[str, tuple[str, ...]] = {}
    tls: dict[str, client_tls.ClientTls] = {}
    sources = []
    if path:
        file = Path(path)
        data = read_toml(file, "targets file")
        for name, body in (data.get("channels") or {}).items():
            if not isinstance(body, dict) or "replicas" not in body:
                raise UsageError(f"targets file {file}: [channels.{name}] needs replicas = [...]")
            channels[check_channel(name)] = _endpoints(body["replicas"], f"{file} [channels.{name}]")
            own = client_tls.ClientTls.create(body.get("tls_ca"), body.get("tls_client_cert"), body.get("tls_client_key"))
            if own is not None:
                tls[name] = own
        sources.append(str(file))
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and value.strip():
            name = check_channel(key[len(ENV_PREFIX) :].lower())
            channels[name] = _endpoints(value, key)
            sources.append(key)
    return Targets(channels, ", ".join(sources) or "(none)", tls)
