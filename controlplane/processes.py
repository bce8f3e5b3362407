"""Whether a process runs, from /proc (Linux): no signal is sent."""

from __future__ import annotations

from pathlib import Path


def process_exists(pid: int | None) -> bool:
    """True while `pid` is a running process (not gone, not a zombie)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
