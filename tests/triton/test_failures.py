"""The one classifier of Triton errors, on the messages and statuses real servers send."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from controlplane.triton.failures import Failure, classify


@pytest.mark.parametrize(
    ("message", "status", "kind"),
    [
        ("This protocol is restricted, expecting header 'triton-grpc-protocol-k'", "StatusCode.UNAVAILABLE", Failure.DENIED),
        ("failed to connect to all addresses", "StatusCode.UNAVAILABLE", Failure.UNREACHABLE),
        ("Request for unknown model: 'nosuch' is not found", "StatusCode.NOT_FOUND", Failure.NOT_FOUND),
        ("Request for unknown model: 'm' version 9 is not at ready state", "400", Failure.NOT_FOUND),
        ("unexpected inference input 'z' for model 'mlp'", "StatusCode.INVALID_ARGUMENT", Failure.BAD_REQUEST),
        ("output 'y' dtype FP32 does not match config TYPE_FP64\n\nAt:\n  model.py(1)", "StatusCode.INTERNAL", Failure.SERVER),
    ],
)
def test_classify(message, status, kind):
    failure = classify(InferenceServerException(message, status=status))
    assert failure.kind is kind
    assert "At:" not in failure.message


def test_connection_errors_are_unreachable():
    assert classify(ConnectionRefusedError("refused")).kind is Failure.UNREACHABLE
