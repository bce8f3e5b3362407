"""The `mlctl` command: global options, the sub-apps, and the one place errors become exit codes."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Optional

import typer

from controlplane.cli import canary as canary_cli
from controlplane.cli import console as console_cli
from controlplane.cli import export as export_cli
from controlplane.cli import gate as gate_cli
from controlplane.cli import gateway as gateway_cli
from controlplane.cli import health as health_cli
from controlplane.cli import infer as infer_cli
from controlplane.cli import keys as keys_cli
from controlplane.cli import lifecycle as lifecycle_cli
from controlplane.cli import metrics as metrics_cli
from controlplane.cli import models as models_cli
from controlplane.cli import monitor as monitor_cli
from controlplane.cli import perf as perf_cli
from controlplane.cli import pipeline as pipeline_cli
from controlplane.cli import quickstart as quickstart_cli
from controlplane.cli import server as server_cli
from controlplane.cli import tune as tune_cli
from controlplane.errors import MlctlError
from controlplane.settings import Settings

app = typer.Typer(
    name="mlctl",
    help="Take PyTorch models to production on NVIDIA Triton: export, publish, serve, infer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    repository: Annotated[
        Optional[str],
        typer.Option("--repository", "-r", envvar="MLCTL_REPOSITORY", help="Model repository: a local folder or s3://bucket/prefix."),
    ] = None,
    home: Annotated[
        Optional[str],
        typer.Option("--home", envvar="MLCTL_HOME", help="Where managed servers keep state and logs [default: ~/.mlctl]."),
    ] = None,
    targets: Annotated[
        Optional[str],
        typer.Option("--targets", envvar="MLCTL_TARGETS", help="TOML file: channel -> Triton gRPC replicas [default: ./mlctl.toml]."),
    ] = None,
    control_key_file: Annotated[
        Optional[str],
        typer.Option("--control-key-file", envvar="MLCTL_CONTROL_KEY_FILE", help="File holding the model-control key."),
    ] = None,
    control_key: Annotated[
        Optional[str],
        typer.Option("--control-key", envvar="MLCTL_CONTROL_KEY", help="Model-control key (prefer the env var or a file)."),
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", envvar="MLCTL_LOG_FORMAT", help="Action events on stderr: text or json.")
    ] = "text",
    tls_ca: Annotated[
        Optional[str], typer.Option("--tls-ca", envvar="MLCTL_TLS_CA", help="CA certificate (PEM) of Triton's gRPC TLS: talk TLS to it.")
    ] = None,
    tls_client_cert: Annotated[
        Optional[str], typer.Option("--tls-client-cert", envvar="MLCTL_TLS_CLIENT_CERT", help="Client certificate (PEM) for mutual TLS.")
    ] = None,
    tls_client_key: Annotated[
        Optional[str], typer.Option("--tls-client-key", envvar="MLCTL_TLS_CLIENT_KEY", help="Client key (PEM) for mutual TLS.")
    ] = None,
) -> None:
    from controlplane.triton import tls

    ctx.obj = Settings.create(repository, home, targets, control_key, control_key_file, log_format,
                              (tls_ca, tls_client_cert, tls_client_key))
    tls.use(ctx.obj.tls)  # every gRPC client this command opens towards Triton


app.add_typer(server_cli.app, name="server")
app.add_typer(models_cli.app, name="model")
app.add_typer(metrics_cli.app, name="metrics")
app.add_typer(gateway_cli.app, name="gateway")
app.add_typer(monitor_cli.app, name="monitor")
app.add_typer(canary_cli.app, name="canary")
app.add_typer(pipeline_cli.app, name="pipeline")
app.add_typer(lifecycle_cli.channel_app, name="channel")
app.add_typer(keys_cli.keys_app, name="keys")
app.add_typer(keys_cli.policy_app, name="policy")
app.command("export")(export_cli.export)
app.command("publish")(export_cli.publish)
app.command("sign")(keys_cli.sign)
app.command("infer")(infer_cli.infer)
app.command("perf")(perf_cli.perf)
app.command("tune")(tune_cli.tune)
app.add_typer(tune_cli.revision_app, name="config-revision")
app.command("promote")(lifecycle_cli.promote)
app.command("rollback")(lifecycle_cli.rollback)
app.command("status")(lifecycle_cli.status)
app.command("history")(lifecycle_cli.history)
app.command("reconcile")(lifecycle_cli.reconcile)
app.command("gate")(gate_cli.gate)
app.command("health")(health_cli.health)
app.command("quickstart")(quickstart_cli.quickstart)
app.command("console")(console_cli.console)


def run() -> None:
    """Console entry point. Usage errors exit 2 (typer); MlctlError exits with its own code. SIGTERM (a CI job's
    timeout, `kill`) is handled as Ctrl-C is: the command's cleanup runs (a scratch server is stopped, a switch is
    left for 'mlctl reconcile'); servers that install their own handler (the gateway) replace this one."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        app()
    except MlctlError as exc:
        sys.stderr.write(f"error: {exc}\n")
        _exit(exc.exit_code)
    except SystemExit as exc:
        _exit(exc.code)
    _exit(0)


def _terminated(signum, frame) -> None:
    signal.signal(signum, signal.SIG_IGN)  # once: a second signal must not cut the cleanup short
    raise KeyboardInterrupt(f"signal {signum}")


def _exit(code: object) -> None:
    """Exit with `code` once the output is flushed. Where pyarrow was loaded, the process ends with os._exit:
    Arrow's native thread pools can abort the interpreter's own shutdown ("terminate called without an active
    exception", SIGABRT, apache/arrow#34314) after the command's work is done, turning a success into exit 134."""
    if isinstance(code, str):  # sys.exit("message") prints the message and exits 1
        sys.stderr.write(code + "\n")
        code = 1
    status = 0 if code is None else int(code)  # type: ignore[call-overload]
    if "pyarrow" not in sys.modules:
        sys.exit(status)
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            pass
    os._exit(status)


if __name__ == "__main__":
    run()
