"""`mlctl gateway serve`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

app = typer.Typer(help="The prediction gateway (FastAPI) in front of Triton.", no_args_is_help=True)


def _keys(value: Optional[str]) -> frozenset[str]:
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    triton_url: Annotated[str, typer.Option(envvar="MLCTL_TRITON_URL", help="Triton gRPC host:port.")] = "127.0.0.1:8001",
    predict_keys: Annotated[Optional[str], typer.Option(envvar="MLCTL_GATEWAY_PREDICT_KEYS", help="Comma-separated keys allowed to predict.")] = None,
    admin_keys: Annotated[Optional[str], typer.Option(envvar="MLCTL_GATEWAY_ADMIN_KEYS", help="Comma-separated keys for feedback and admin.")] = None,
    log: Annotated[Optional[str], typer.Option(envvar="MLCTL_PREDICTION_LOG", help="Prediction log: a folder or s3://bucket/prefix.")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 1 << 20,
    flush_rows: Annotated[int, typer.Option(help="Log segment size (records).")] = 1000,
    flush_seconds: Annotated[float, typer.Option(help="Longest a logged record waits before its segment is written.")] = 2.0,
) -> None:
    """Serve the gateway with uvicorn until stopped (SIGINT/SIGTERM flush the log before exit)."""
    import logging

    import uvicorn

    from controlplane.errors import UsageError
    from controlplane.feedback.gateway.app import GatewayConfig, create_app

    config = GatewayConfig(triton_url=triton_url, predict_keys=_keys(predict_keys), admin_keys=_keys(admin_keys),
                           max_body_bytes=max_body_bytes, log_uri=log, flush_rows=flush_rows, flush_seconds=flush_seconds,
                           repository=ctx.obj.repository)
    if not config.admin_keys:
        raise UsageError("the gateway needs at least one admin key", hint="set MLCTL_GATEWAY_ADMIN_KEYS (and MLCTL_GATEWAY_PREDICT_KEYS)")
    # the gateway's warnings (unreadable canary state, lost log segments) go to stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning")
