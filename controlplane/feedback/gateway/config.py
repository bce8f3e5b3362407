"""The gateway's settings, read once by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.defaults import CANARY_STATE_TTL_S, GATEWAY_PREDICTION_INDEX_SIZE

API_KEY_HEADER = "X-API-Key"


@dataclass
class GatewayConfig:
    triton_url: str  # gRPC host:port: configs, readiness, and inference unless triton_http_url is set
    triton_http_url: str | None = None  # HTTP host:port: inference over Triton's HTTP protocol (cheaper per request)
    predict_keys: frozenset[str] = frozenset()
    admin_keys: frozenset[str] = frozenset()  # feedback and admin; also allowed to predict
    max_body_bytes: int = 1 << 20
    # admission control, per model and worker: a request beyond this many in flight to Triton is answered 429 at
    # once, before Triton (0: no limit). An alternative to Triton's queue policy, which stalls 2.51's batcher
    max_in_flight: int = 0
    # requests for one model that are ready together go to Triton as one (coalesce.py), where its config
    # enables dynamic batching; Triton then counts a group as one request
    coalesce: bool = False
    log_uri: str | None = None  # local folder or s3://bucket/prefix; None: no prediction log
    flush_rows: int = 1000
    flush_seconds: float = 2.0
    repository: str | None = None  # where canary state is read from (None: no canaries)
    canary_ttl_s: float = CANARY_STATE_TTL_S
    index_size: int = GATEWAY_PREDICTION_INDEX_SIZE  # prediction ids remembered for feedback checks
    extra: dict = field(default_factory=dict)
    # per-key limits, `KEY:RATE[:MAX_BODY_BYTES]` entries (`*`: every key without its own); see ratelimit.py
    key_limits: str = ""
    limits_file: str | None = None  # the token buckets all workers share (made by the CLI for --workers N)
    # TLS towards Triton's gRPC endpoint (PEM paths; None: plain text)
    triton_tls_ca: str | None = None
    triton_tls_cert: str | None = None
    triton_tls_key: str | None = None

    def triton_tls(self):
        from controlplane.triton.tls import ClientTls

        return ClientTls.create(self.triton_tls_ca, self.triton_tls_cert, self.triton_tls_key)
