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


def process_group(pid: int) -> int | None:
    """The process group of `pid` (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[2])


def group_members(leader: int) -> list[int]:
    """Every running process in `leader`'s process group."""
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and process_group(int(e.name)) == leader]


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
