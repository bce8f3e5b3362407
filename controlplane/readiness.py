"""Ports and readiness: find a free loopback port, and wait for a condition with a deadline (never a fixed sleep).

Used by the managed servers, the benchmarks and drills in scripts/, and the tests: one implementation.
"""

from __future__ import annotations

import socket
import time
from typing import Callable

POLL_S = 0.1


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free now (another process may still take it before it is bound)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               give_up: Callable[[], str | None] | None = None, poll_s: float = POLL_S) -> None:
    """Return once `condition()` is true; TimeoutError naming `what` after `timeout_s`.

    `give_up` is asked between polls: a non-empty answer (e.g. "the process exited") ends the wait at once
    with a RuntimeError carrying it, so a dead server is not waited for until the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if give_up is not None:
            reason = give_up()
            if reason:
                raise RuntimeError(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:g} s")
        time.sleep(poll_s)


def wait_for_port(host: str, port: int, timeout_s: float, what: str | None = None,
                  give_up: Callable[[], str | None] | None = None) -> None:
    wait_until(lambda: port_open(host, port), timeout_s, what or f"{host}:{port} accepting connections", give_up)
