"""TLS towards Triton's gRPC endpoint: what a client presents and trusts, and what a server is started with.

Triton serves TLS on gRPC only (its HTTP endpoint has none): every control call and every gRPC inference can
run over it; HTTP inference stays plain text and belongs behind a trusted network or the gateway's HTTPS.

The client side is read once (settings, from MLCTL_TLS_CA / MLCTL_TLS_CLIENT_CERT / MLCTL_TLS_CLIENT_KEY) and put
in effect for the process with `use()`; every gRPC client mlctl opens asks `for_url()`. A targets file may give a
channel's replicas their own (see targets.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controlplane.errors import NotFoundError, UsageError

ENV_HINT = "set MLCTL_TLS_CA (the CA that signed the server's certificate) to talk TLS"
MUTUAL_HINT = "a server with mutual TLS also needs MLCTL_TLS_CLIENT_CERT and MLCTL_TLS_CLIENT_KEY"


@dataclass(frozen=True)
class ClientTls:
    """PEM files: the CA that signed the server's certificate, and for mutual TLS our certificate and key."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @classmethod
    def create(cls, ca: str | None, cert: str | None, key: str | None) -> ClientTls | None:
        """None when nothing is given; a UsageError for half a client pair or a missing file."""
        if not (ca or cert or key):
            return None
        if bool(cert) != bool(key):
            raise UsageError("a client certificate needs its key and a key its certificate",
                             hint="set both MLCTL_TLS_CLIENT_CERT and MLCTL_TLS_CLIENT_KEY")
        for what, path in (("TLS CA", ca), ("TLS client certificate", cert), ("TLS client key", key)):
            _must_exist(what, path)
        return cls(ca, cert, key)

    def grpc_kwargs(self) -> dict:
        """Keyword arguments of tritonclient's gRPC InferenceServerClient (sync and aio)."""
        return {"ssl": True, "root_certificates": self.ca, "private_key": self.key, "certificate_chain": self.cert}

    def channel_credentials(self):
        """grpc channel credentials, for a raw channel (the gateway's inference stub)."""
        import grpc

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


@dataclass(frozen=True)
class ServerTls:
    """What tritonserver is started with: its certificate and key, and with `ca` client certificates required."""

    cert: str
    key: str
    ca: str | None = None

    @classmethod
    def create(cls, cert: str | None, key: str | None, ca: str | None) -> ServerTls | None:
        if not (cert or key or ca):
            return None
        if not (cert and key):
            raise UsageError("TLS needs both --tls-cert and --tls-key" + (" (--tls-ca only adds mutual TLS)" if ca else ""))
        for what, path in (("TLS certificate", cert), ("TLS key", key), ("TLS CA", ca)):
            _must_exist(what, path)
        return cls(str(Path(cert).resolve()), str(Path(key).resolve()), str(Path(ca).resolve()) if ca else None)

    def args(self) -> list[str]:
        """tritonserver's gRPC SSL flags (pure)."""
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.cert}", f"--grpc-server-key={self.key}"]
        if self.ca:
            args += [f"--grpc-root-cert={self.ca}", "--grpc-use-ssl-mutual=true"]
        return args


def _must_exist(what: str, path: str | None) -> None:
    if path and not Path(path).is_file():
        raise NotFoundError(f"{what} {path} not found")


_default: ClientTls | None = None
_per_endpoint: dict[str, ClientTls] = {}


def use(default: ClientTls | None, per_endpoint: dict[str, ClientTls] | None = None) -> None:
    """Put the client TLS in effect for this process (the CLI does, once, from its settings)."""
    global _default
    _default = default
    _per_endpoint.clear()
    _per_endpoint.update(per_endpoint or {})


def add_endpoints(tls: ClientTls, endpoints: tuple[str, ...]) -> None:
    """These gRPC endpoints use `tls` (a channel's own, from the targets file)."""
    _per_endpoint.update(dict.fromkeys(endpoints, tls))


def for_url(url: str) -> ClientTls | None:
    return _per_endpoint.get(url, _default)


def grpc_kwargs(url: str) -> dict:
    tls = for_url(url)
    return tls.grpc_kwargs() if tls else {}


def unreachable_hint(url: str) -> str:
    """What to try when a gRPC endpoint does not answer: it may be down, or speak TLS where we do not (or need
    a client certificate we did not present)."""
    tls = for_url(url)
    if tls is None:
        return f"is the server running? try 'mlctl server status'; if it serves TLS, {ENV_HINT}"
    if not tls.cert:
        return f"is the server running? if it requires mutual TLS, {MUTUAL_HINT}; check that MLCTL_TLS_CA signed its certificate"
    return "is the server running? check that MLCTL_TLS_CA signed its certificate and that it trusts our client certificate"
