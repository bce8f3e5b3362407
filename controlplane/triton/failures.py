"""One classifier for Triton's errors. Every caller (the CLI's client, the replicas, the gateway) turns an
InferenceServerException into one of these kinds, then into its own error (an MlctlError, an HTTP status).

Triton says what went wrong in a status (gRPC code or HTTP status) and a message; both differ between the
protocols and between versions, so the rules look at both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Failure(enum.Enum):
    UNREACHABLE = "unreachable"  # nothing answered: connection refused, timeout, server gone
    DENIED = "denied"  # a restricted API without the right key
    NOT_FOUND = "not-found"  # unknown model or version, or not ready
    BAD_REQUEST = "bad-request"  # inputs that do not fit the model: names, shapes, dtypes
    SERVER = "server"  # the server or the model failed on a valid request
    OVERLOADED = "overloaded"  # the model's queue policy rejected it (queue full or queued too long): retry later


@dataclass(frozen=True)
class TritonFailure:
    kind: Failure
    message: str  # Triton's message, without the Python backend's traceback
    status: str


_UNREACHABLE = ("failed to connect", "connection refused", "deadline exceeded", "socket closed", "connection reset")
# a queue policy's rejects come as gRPC UNAVAILABLE too: the message tells them from a server that is gone
_OVERLOADED = ("exceeds maximum queue size", "request timeout expired")
_DENIED = ("restricted", "unauthorized", "permission")
_NOT_FOUND = ("unknown model", "is not found", "not found", "not ready", "no version is available", "unknown version")
_BAD_REQUEST = ("unexpected", "shape", "datatype", "invalid argument", "expected", "unable to find", "inference input")


def classify(exc: BaseException) -> TritonFailure:
    """The kind of a tritonclient exception (or of a connection error raised below it)."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return TritonFailure(Failure.UNREACHABLE, str(exc), "")
    message_of = getattr(exc, "message", None)
    message = (message_of() if callable(message_of) else None) or str(exc)
    message = message.split("\n\nAt:")[0].strip()  # the Python backend appends a Python traceback
    status_of = getattr(exc, "status", None)
    status = str((status_of() if callable(status_of) else "") or "")
    lowered, code = message.lower(), status.upper()
    # a restricted protocol answers gRPC UNAVAILABLE ("This protocol is restricted, expecting header ..."):
    # the message decides before the code does
    if "PERMISSION_DENIED" in code or "UNAUTHENTICATED" in code or code == "403" or any(s in lowered for s in _DENIED):
        kind = Failure.DENIED
    elif any(s in lowered for s in _OVERLOADED):
        kind = Failure.OVERLOADED
    elif "UNAVAILABLE" in code or "DEADLINE_EXCEEDED" in code or any(s in lowered for s in _UNREACHABLE):
        kind = Failure.UNREACHABLE
    elif "NOT_FOUND" in code or any(s in lowered for s in _NOT_FOUND):
        kind = Failure.NOT_FOUND
    elif "INVALID_ARG" in code or code == "400" or any(s in lowered for s in _BAD_REQUEST):
        kind = Failure.BAD_REQUEST
    else:
        kind = Failure.SERVER
    return TritonFailure(kind, message, status)
