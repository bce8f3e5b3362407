"""POST /v2/models/{model}[/versions/{version}]/infer: Triton's own HTTP inference protocol, so tritonclient.http
works against the gateway unchanged (JSON tensors and the binary tensor data extension). The answer's
parameters carry the prediction ids, one per row, for feedback."""

from __future__ import annotations

from starlette.exceptions import HTTPException

from controlplane.feedback.gateway import v2
from controlplane.feedback.gateway.forward import Labels, answered, checked, fits, forward
from controlplane.feedback.gateway.state import GatewayState

ROUTE = "infer"


async def handle(gateway: GatewayState, model: str, version: str, body: bytes, headers: dict[bytes, bytes], started: float,
                 labels: Labels) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    encoding = headers.get(b"content-encoding", b"identity").lower()
    if encoding != b"identity":
        raise HTTPException(415, f"Content-Encoding {encoding.decode(errors='replace')!r} is not supported by the gateway; "
                                 "send the request uncompressed")
    request = v2.parse_request(body, _header_length(headers))
    info = await gateway.upstream.model(model)
    labels.model = model
    arrays, layout = {t.name: t.array() for t in request.inputs}, request.layout
    fit = layout is not None and layout.fits is info  # a header seen before, found to fit this config then
    if not fit:
        fit = fits(info, arrays)
        if fit and layout is not None:
            layout.fits = info
    arrays = checked(model, info, arrays, 400, fit)
    answered_version, outputs, ids = await forward(gateway, model, info, request.inputs, arrays, version,
                                                   _text(headers.get(b"x-client-key")), started, request.parameters)
    labels.version = answered_version
    data, header_length = answered(gateway, model, answered_version, info, arrays, outputs, ids, started,
                                   lambda _out, _ms: v2.encode_answer(model, answered_version, request, outputs,
                                                                      {v2.IDS_PARAMETER: ",".join(ids)}))
    if header_length is None:
        return data, [(b"content-type", b"application/json")]
    return data, [(b"content-type", b"application/octet-stream"), (v2.HEADER_LENGTH.encode(), str(header_length).encode())]


def _header_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(v2.HEADER_LENGTH.encode())
    if value is None:
        return None
    if not value.isdigit():
        raise HTTPException(400, f"Inference-Header-Content-Length must be a number of bytes, not {value[:20]!r}")
    return int(value)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
