"""`mlctl gateway serve`: HTTP or HTTPS, towards Triton in plain text or over TLS gRPC (MLCTL_TLS_*)."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

app = typer.Typer(help="The prediction gateway in front of Triton (its own JSON route and Triton's HTTP protocol).", no_args_is_help=True)


FACTORY = "controlplane.feedback.gateway.app:create_app_from_environment"


def _keys(value: str | None) -> frozenset[str]:
    return frozenset(k.strip() for k in (value or "").split(",") if k.strip())


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    triton_url: Annotated[str, typer.Option(envvar="MLCTL_TRITON_URL", help="Triton gRPC host:port.")] = "127.0.0.1:8001",
    triton_http_url: Annotated[str | None, typer.Option(envvar="MLCTL_TRITON_HTTP_URL",
                                                        help="Triton HTTP host:port: infer over it (less CPU per request than gRPC).")] = None,
    predict_keys: Annotated[str | None, typer.Option(envvar="MLCTL_GATEWAY_PREDICT_KEYS", help="Comma-separated keys allowed to predict.")] = None,
    admin_keys: Annotated[str | None, typer.Option(envvar="MLCTL_GATEWAY_ADMIN_KEYS", help="Comma-separated keys for feedback and admin.")] = None,
    log: Annotated[str | None, typer.Option(envvar="MLCTL_PREDICTION_LOG", help="Prediction log: a folder or s3://bucket/prefix.")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 1 << 20,
    max_in_flight: Annotated[int, typer.Option(
        help="Per model and worker: requests beyond this many in flight to Triton are answered 429 at once (0: no limit).")] = 0,
    coalesce: Annotated[bool, typer.Option(
        envvar="MLCTL_GATEWAY_COALESCE",
        help="Send requests for one model that are ready together as one Triton request (models with dynamic batching "
             "only; nothing waits): less CPU per request for Triton and the gateway. Triton then counts a group as one "
             "request.")] = False,
    flush_rows: Annotated[int, typer.Option(help="Log segment size (records).")] = 1000,
    flush_seconds: Annotated[float, typer.Option(help="Longest a logged record waits before its segment is written.")] = 2.0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes, shared-nothing, each with its own log writer.")] = 1,
    key_limits: Annotated[str, typer.Option(envvar="MLCTL_GATEWAY_KEY_LIMITS",
                                            help="Per-key limits KEY:RATE[:MAX_BODY_BYTES], comma-separated; '*' for every key. "
                                                 "The rate holds across --workers.")] = "",
    keep_alive_s: Annotated[float, typer.Option(
        help="Close a client connection idle this long (seconds); set it above a load balancer's own idle timeout.")] = 5.0,
    tls_cert: Annotated[str | None, typer.Option(help="Certificate (PEM): serve HTTPS.")] = None,
    tls_key: Annotated[str | None, typer.Option(help="Key (PEM) for --tls-cert.")] = None,
) -> None:
    """Serve the gateway with uvicorn until stopped (SIGINT/SIGTERM flush the log before exit)."""
    import logging
    import os
    from dataclasses import replace

    import uvicorn

    from controlplane.errors import UsageError
    from controlplane.feedback.gateway.app import GatewayConfig, config_environment
    from controlplane.feedback.gateway.protocol import GatewayProtocol
    from controlplane.feedback.gateway.ratelimit import (
        Limiter,
        make_shared_file,
        parse_limits,
    )

    tls = ctx.obj.tls  # towards Triton's gRPC (MLCTL_TLS_*)
    config = GatewayConfig(triton_url=triton_url, triton_http_url=triton_http_url, predict_keys=_keys(predict_keys), admin_keys=_keys(admin_keys),
                           max_body_bytes=max_body_bytes, max_in_flight=max_in_flight, coalesce=coalesce, log_uri=log, flush_rows=flush_rows, flush_seconds=flush_seconds,
                           repository=ctx.obj.repository, key_limits=key_limits,
                           **({"triton_tls_ca": tls.ca, "triton_tls_cert": tls.cert, "triton_tls_key": tls.key} if tls else {}))
    if not config.admin_keys:
        raise UsageError("the gateway needs at least one admin key", hint="set MLCTL_GATEWAY_ADMIN_KEYS (and MLCTL_GATEWAY_PREDICT_KEYS)")
    if tls and triton_http_url:
        raise UsageError("Triton serves TLS on gRPC only: --triton-http-url would send predictions in plain text",
                         hint="leave out --triton-http-url (inference then goes over TLS gRPC), or MLCTL_TLS_* for a plain-text Triton")
    if max_in_flight < 0:
        raise UsageError(f"--max-in-flight must not be negative (got {max_in_flight})", hint="0 means no limit")
    if keep_alive_s <= 0:
        raise UsageError(f"--keep-alive-s must be positive (got {keep_alive_s})")
    if bool(tls_cert) != bool(tls_key):
        raise UsageError("HTTPS needs both --tls-cert and --tls-key")
    limiter = Limiter(config.admin_keys | config.predict_keys, parse_limits(key_limits), max_body_bytes)  # bad limits: exit 2 now
    # the gateway's warnings (unreadable canary state, lost log segments) go to stderr
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shared = make_shared_file(len(limiter.slots)) if workers > 1 and key_limits else None  # one set of buckets for all workers
    os.environ.update(config_environment(replace(config, limits_file=shared)))  # each worker builds its own app from it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # uvicorn stops gracefully on SIGTERM, then re-raises it
    try:
        # no proxy-headers middleware and no access log: neither is used, both cost on every request; the gateway's
        # own HTTP protocol answers the inference routes without ASGI in between (protocol.py)
        uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers, log_level="warning", access_log=False,
                    proxy_headers=False, timeout_keep_alive=keep_alive_s, ssl_certfile=tls_cert, ssl_keyfile=tls_key, http=GatewayProtocol)
    finally:
        if shared:
            os.unlink(shared)
