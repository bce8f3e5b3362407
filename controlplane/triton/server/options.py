"""What a managed tritonserver is started with, and the command-line arguments that follow from it (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.triton.replicas import CONTROL_HEADER
from controlplane.triton.tls import ServerTls


@dataclass(frozen=True)
class ServerOptions:
    repository: str
    name: str = "default"
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    models: tuple[str, ...] | None = None  # None: every model in the repository
    timeout_s: float = 120.0
    exit_timeout_s: int = 10  # how long a stop waits for in-flight requests and open connections
    extra_args: tuple[str, ...] = ()
    runtime: str = "local"  # local: the wheel's tritonserver | docker: the NGC image
    image: str = ""  # docker runtime only; empty for the default image
    gpus: bool = False  # docker runtime only
    binary: str | None = None  # another tritonserver executable than the wheel's
    channel: str | None = None  # serve this channel's versions (--model-config-name=<channel>)
    control_key: str | None = None  # restrict the model-repository API to callers holding this key
    tls: ServerTls | None = None  # gRPC over TLS (mutual when it names a CA); HTTP stays plain text
    # mlctl writes complete configs; Triton's auto-complete launches a Python-backend stub per load only to
    # fill them in (~1.26 s of a 1.4 s switch on the stand-ins). True only for hand-written, partial configs.
    auto_complete_config: bool = False

    def ports(self) -> dict[str, int]:
        return {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}


def common_args(options: ServerOptions, models: list[str]) -> list[str]:
    """tritonserver arguments shared by both runtimes (pure)."""
    args = [
        "--model-control-mode=explicit",
        "--allow-metrics=true",
        "--metrics-config=summary_latencies=true",
        f"--exit-timeout-secs={options.exit_timeout_s}",
        "--log-info=true",
    ]
    if not options.auto_complete_config:
        args.append("--disable-auto-complete-config")
    if options.channel:
        args.append(f"--model-config-name={options.channel}")
    if options.control_key:
        restriction = f"model-repository:{CONTROL_HEADER}={options.control_key}"
        args += [f"--grpc-restricted-protocol={restriction}", f"--http-restricted-api={restriction}"]
    if options.tls:
        args += options.tls.args()
    args += [f"--load-model={m}" for m in models]
    return args + list(options.extra_args)


def local_args(options: ServerOptions, repository_uri: str, backend_dir: str, models: list[str]) -> list[str]:
    """tritonserver arguments for a local process (pure)."""
    return [
        f"--model-repository={repository_uri}",
        f"--backend-directory={backend_dir}",
        f"--http-address={options.host}",
        f"--http-port={options.http_port}",
        f"--grpc-address={options.host}",
        f"--grpc-port={options.grpc_port}",
        f"--metrics-address={options.host}",
        f"--metrics-port={options.metrics_port}",
        *common_args(options, models),
    ]


def redact(command: list[str], secret: str | None) -> list[str]:
    """The command as it may be shown and stored: without the control key."""
    return [a.replace(secret, "***") for a in command] if secret else list(command)
