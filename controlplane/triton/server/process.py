"""The host side of a managed tritonserver: ports, readiness, whether its process runs, its stubs and its log."""

from __future__ import annotations

import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

from controlplane.processes import command_line, group_members, process_exists


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def is_ready(http_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def pid_alive(pid: int | None) -> bool:
    """A running tritonserver with this pid (a reused pid belongs to another program and does not count).
    The command line reads empty for an instant while a process execs; that counts as alive."""
    if not process_exists(pid):
        return False
    cmdline = command_line(pid)
    return not cmdline or b"tritonserver" in cmdline


STUB = b"triton_python_backend_stub"


def stub_pids(server_pid: int) -> list[int]:
    """The Python-backend stubs of a server (it led its own session, so they are in its process group)."""
    return [pid for pid in group_members(server_pid) if STUB in command_line(pid)]


def kill_orphaned_stubs(server_pid: int | None) -> None:
    """SIGKILL Python-backend stubs left in a dead server's process group."""
    if not server_pid:
        return
    for pid in stub_pids(server_pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def log_tail(path: str | Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
