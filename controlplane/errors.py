"""The one error tree of mlctl. Every class carries the process exit code the CLI uses.

    MlctlError (1)                 operational failure
    ├── UsageError (2)             bad input: arguments, specs, files, tensors
    │   ├── ControlKeyError (2)    a replica refused model control: no control key given, or a wrong one
    │   └── AccessDeniedError (2)  the console refused a change: read-only, a wrong admin key, a bad CSRF token
    ├── NotFoundError (3)          repository, model, version or file missing
    ├── ConflictError (4)          the target exists already, or someone else holds it
    ├── UnavailableError (5)       a server (Triton, S3, Docker, Prometheus) is down or unreachable
    ├── CheckFailedError (6)       a check ran and failed: parity, integrity, a gate
    │   └── SignatureError (6)     a version's signature is missing, untrusted or broken under the channel's policy
    └── ServerError (7)            a server we manage failed to start, stop or load

Third-party exceptions are translated where the SDK is called (`raise X(...) from exc`).
Ctrl-C is no MlctlError: the CLI exits 130 (typer maps KeyboardInterrupt), after the library has left its
state consistent (an interrupted promote stays `pending` for `mlctl reconcile`).
"""

from __future__ import annotations


class MlctlError(Exception):
    """Base of every error mlctl raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class UsageError(MlctlError):
    exit_code = 2


class ControlKeyError(UsageError):
    """The model-repository API refused us; `key_given` tells a missing key from a wrong one."""

    def __init__(self, message: str, *, key_given: bool, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.key_given = key_given


class AccessDeniedError(UsageError):
    """A caller may not change anything this way (the console answers 403); nothing was changed."""


class NotFoundError(MlctlError):
    exit_code = 3


class ConflictError(MlctlError):
    exit_code = 4


class UnavailableError(MlctlError):
    exit_code = 5


class CheckFailedError(MlctlError):
    exit_code = 6


class SignatureError(CheckFailedError):
    """`reason` says which check failed: unsigned, untrusted_key, bad_signature or files_changed."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


class ServerError(MlctlError):
    exit_code = 7
