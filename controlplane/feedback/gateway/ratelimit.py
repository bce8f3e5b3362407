"""Per-key limits: requests per second (a token bucket per API key) and the largest request body.

    --key-limits "*:50:65536,batch-key:5:8388608"     KEY:RATE[:MAX_BODY_BYTES], `*` for every key without its own

A key's bucket holds up to one second of its rate (at least one request) and refills continuously; a request
that finds it empty is answered 429 with Retry-After (the seconds until a token is back, rounded up).

With `--workers N` the buckets live in one small file every worker maps (on /dev/shm when there is one), each
key's slot taken under a byte-range lock: the rate holds for the whole gateway, however the kernel spreads
connections over the workers. Several gateway processes (replicas behind a load balancer) share nothing: each
enforces the full rate.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

from controlplane.errors import UsageError

BURST_SECONDS = 1.0  # a bucket holds this many seconds of its rate
EVERY_KEY = "*"
_SLOT = struct.Struct("dd")  # tokens, time of the last refill (time.monotonic: one clock for every process)


@dataclass(frozen=True)
class KeyLimit:
    rate: float | None  # requests per second; None: no rate limit
    max_body_bytes: int | None  # None: the gateway's --max-body-bytes

    @property
    def burst(self) -> float:
        return max(1.0, (self.rate or 0) * BURST_SECONDS)


def parse_limits(text: str) -> dict[str, KeyLimit]:
    """`KEY:RATE[:MAX_BODY_BYTES],...` -> {key: limit} (pure). A RATE of 0 or `-` sets no rate limit."""
    limits: dict[str, KeyLimit] = {}
    for entry in (e.strip() for e in (text or "").split(",")):
        if not entry:
            continue
        key, _, rest = entry.partition(":")
        rate_text, _, body_text = rest.partition(":")
        try:
            rate = None if rate_text in ("", "-", "0") else float(rate_text)
            body = int(body_text) if body_text else None
        except ValueError:
            raise UsageError(f"key limit {_shown(entry)!r} is not KEY:RATE[:MAX_BODY_BYTES]",
                             hint="e.g. '*:50' or 'KEY:10:65536'") from None
        if not key or (rate is not None and not (rate > 0 and math.isfinite(rate))) or (body is not None and body <= 0):
            raise UsageError(f"key limit {_shown(entry)!r}: RATE must be a positive number and MAX_BODY_BYTES a positive integer")
        limits[key] = KeyLimit(rate, body)
    return limits


def _shown(entry: str) -> str:
    """An entry as a message may show it: without the key."""
    key, sep, rest = entry.partition(":")
    return f"{key_id(key)}{sep}{rest}" if key != EVERY_KEY else entry


def key_id(key: str | bytes) -> str:
    """A key's name in metrics and messages: a short digest, never the key itself."""
    data = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(data).hexdigest()[:8]


def take(tokens: float, last: float, now: float, rate: float, burst: float) -> tuple[float, float, float]:
    """One request against a bucket: (tokens left, refill time, 0.0 when admitted, else seconds to wait) (pure).
    A never-used bucket (last == 0) starts full."""
    tokens = burst if last == 0 else min(burst, tokens + (now - last) * rate)
    if tokens >= 1.0:
        return tokens - 1.0, now, 0.0
    return tokens, now, (1.0 - tokens) / rate


class Buckets:
    """Token-bucket state per slot, in this process."""

    def __init__(self, slots: int) -> None:
        self.state = [(0.0, 0.0)] * slots

    def take(self, slot: int, now: float, rate: float, burst: float) -> float:
        tokens, last, wait = take(*self.state[slot], now, rate, burst)
        self.state[slot] = (tokens, last)
        return wait


class SharedBuckets:
    """The same state in a file every worker maps; a slot is read and written under its own byte-range lock."""

    def __init__(self, path: str, slots: int) -> None:
        import mmap
        import os

        self.fd = os.open(path, os.O_RDWR)
        if os.fstat(self.fd).st_size < slots * _SLOT.size:
            os.ftruncate(self.fd, slots * _SLOT.size)
        self.map = mmap.mmap(self.fd, max(1, slots) * _SLOT.size)

    def take(self, slot: int, now: float, rate: float, burst: float) -> float:
        import fcntl

        offset = slot * _SLOT.size
        fcntl.lockf(self.fd, fcntl.LOCK_EX, _SLOT.size, offset)
        try:
            tokens, last, wait = take(*_SLOT.unpack_from(self.map, offset), now, rate, burst)
            _SLOT.pack_into(self.map, offset, tokens, last)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, _SLOT.size, offset)
        return wait


def make_shared_file(slots: int) -> str:
    """A zeroed buckets file for the workers to share (the caller removes it when the gateway stops)."""
    import os
    import tempfile

    folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
    fd, path = tempfile.mkstemp(prefix="mlctl-gateway-buckets-", dir=folder)
    os.ftruncate(fd, max(1, slots) * _SLOT.size)
    os.close(fd)
    return path


class Limiter:
    """The limits of every known key; `admit(key)` spends one token of that key's bucket."""

    def __init__(self, keys: frozenset[str], limits: dict[str, KeyLimit], default_body_bytes: int,
                 shared_file: str | None = None) -> None:
        every = limits.get(EVERY_KEY, KeyLimit(None, None))
        unknown = set(limits) - set(keys) - {EVERY_KEY}
        if unknown:
            raise UsageError(f"key limits name {len(unknown)} key(s) that are neither predict nor admin keys",
                             hint=f"their ids: {', '.join(sorted(key_id(k) for k in unknown))}")
        self.limits = {k.encode(): limits.get(k, every) for k in sorted(keys)}
        self.slots = {k: i for i, k in enumerate(self.limits)}
        self.default_body_bytes = default_body_bytes
        self.body = {k: limit.max_body_bytes or default_body_bytes for k, limit in self.limits.items()}
        self.ids = {k: key_id(k) for k in self.limits}
        self.buckets = SharedBuckets(shared_file, len(self.slots)) if shared_file else Buckets(len(self.slots))

    def admit(self, key: bytes, now: float) -> float:
        """0.0 when the request may go on; otherwise the seconds until this key may send again."""
        limit = self.limits[key]
        if limit.rate is None:
            return 0.0
        return self.buckets.take(self.slots[key], now, limit.rate, limit.burst)

    def max_body(self, key: bytes) -> int:
        return self.body[key]

    @property
    def largest_body(self) -> int:
        """The largest body any key may send."""
        return max([self.default_body_bytes, *self.body.values()])
