"""The one load generator: closed-loop clients that call a target until a deadline (or a stop) and record
every answer. The gate, the switch drills, the tests and every benchmark use it.

- `run_threads(make_caller, concurrency, seconds)`: a thread per client with a blocking caller (mlctl's
  TritonClient over gRPC or HTTP). `Load` runs the same in the background, across replicas and protocols,
  while control actions happen (a version switch under load).
- `run_async(make_caller, concurrency, seconds)`: asyncio workers with an async caller (tritonclient's aio
  clients, aiohttp): high concurrency from one process, as the benchmarks need.
- `run_open_loop(make_caller, rate_per_s, seconds)`: open loop, requests sent on a fixed schedule whatever the
  answers; a request's latency counts from its scheduled time, so a saturated target shows its queue (no
  coordinated omission) instead of slowing the load down.

A caller returns the version that answered ("" when unknown) or raises; a raised error is a failed request,
recorded with its message, never a crash of the load. Each Record keeps when the request started and
ended, the client, replica and protocol, the version and the error: enough to judge a switch (no failures,
the right versions, when) and to compute throughput and latency percentiles.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

Caller = Callable[[], str]
AsyncCaller = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class Record:
    client: int
    protocol: str
    replica: str
    start: float  # time.monotonic()
    end: float
    version: str
    error: str = ""

    @property
    def latency_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class LoadResult:
    records: tuple[Record, ...]
    elapsed_s: float

    @property
    def failures(self) -> int:
        return sum(1 for r in self.records if r.error)

    @property
    def latencies_s(self) -> list[float]:
        return [r.latency_s for r in self.records if not r.error]

    @property
    def requests_per_s(self) -> float:
        return (len(self.records) - self.failures) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        latencies = self.latencies_s
        return float(np.percentile(latencies, q)) * 1000 if latencies else None

    def summary(self) -> dict:
        """Throughput, latency percentiles (ms, successful requests) and failures."""
        failed = [r.error for r in self.records if r.error]
        return {
            "requests": len(self.records),
            "failures": len(failed),
            "error_rate": len(failed) / len(self.records) if self.records else None,
            "requests_per_s": round(self.requests_per_s, 1),
            **{f"p{q}_ms": _round(self.percentile_ms(q)) for q in (50, 90, 95, 99)},
            "failure_examples": failed[:3],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _record(index: int, protocol: str, replica: str, start: float, version: str = "", error: str = "") -> Record:
    return Record(index, protocol, replica, start, time.monotonic(), version, error)


def _thread_loop(index: int, call: Caller, until: Callable[[], bool], out: list[Record], protocol: str, replica: str) -> None:
    while not until():
        start = time.monotonic()
        try:
            out.append(_record(index, protocol, replica, start, str(call() or "")))
        except Exception as exc:  # a failed request is data for the load, recorded with its message
            out.append(_record(index, protocol, replica, start, error=str(exc) or type(exc).__name__))


def run_threads(make_caller: Callable[[int], Caller], concurrency: int, seconds: float,
                stop: threading.Event | None = None, protocol: str = "", replica: str = "") -> LoadResult:
    """`concurrency` threads, each calling its own `make_caller(i)` until `seconds` pass or `stop` is set."""
    deadline = time.monotonic() + seconds
    stop = stop or threading.Event()
    per_client: list[list[Record]] = [[] for _ in range(concurrency)]
    callers = [make_caller(i) for i in range(concurrency)]
    threads = [
        threading.Thread(target=_thread_loop, daemon=True,
                         args=(i, callers[i], lambda: stop.is_set() or time.monotonic() >= deadline, per_client[i], protocol, replica))
        for i in range(concurrency)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return LoadResult(tuple(sorted((r for rs in per_client for r in rs), key=lambda r: r.start)), time.monotonic() - started)


async def run_async(make_caller: Callable[[int], AsyncCaller], concurrency: int, seconds: float,
                    protocol: str = "", replica: str = "") -> LoadResult:
    """`concurrency` asyncio workers, each awaiting its own `make_caller(i)` until `seconds` pass."""
    deadline = time.monotonic() + seconds
    records: list[Record] = []

    async def worker(index: int, call: AsyncCaller) -> None:
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                records.append(_record(index, protocol, replica, start, str(await call() or "")))
            except Exception as exc:  # a failed request is data for the load, recorded with its message
                records.append(_record(index, protocol, replica, start, error=str(exc) or type(exc).__name__))

    started = time.monotonic()
    await asyncio.gather(*(worker(i, make_caller(i)) for i in range(concurrency)))
    return LoadResult(tuple(sorted(records, key=lambda r: r.start)), time.monotonic() - started)


def run_open_loop(make_caller: Callable[[int], Caller], rate_per_s: float, seconds: float, max_in_flight: int = 64,
                  stop: threading.Event | None = None, protocol: str = "", replica: str = "") -> LoadResult:
    """Requests at a fixed `rate_per_s` for `seconds`, on up to `max_in_flight` worker threads (each with its own
    `make_caller(i)`). A request that waits for a free worker is late, and its wait counts in its latency."""
    from concurrent.futures import ThreadPoolExecutor

    if rate_per_s <= 0:
        raise ValueError(f"an open-loop rate must be positive, not {rate_per_s}")
    stop = stop or threading.Event()
    local, lock, records = threading.local(), threading.Lock(), []
    slots = iter(range(max_in_flight))

    def send(scheduled: float) -> None:
        if not hasattr(local, "call"):
            with lock:
                local.index = next(slots)
            local.call = make_caller(local.index)
        try:
            record = _record(local.index, protocol, replica, scheduled, str(local.call() or ""))
        except Exception as exc:  # a failed request is data for the load, recorded with its message
            record = _record(local.index, protocol, replica, scheduled, error=str(exc) or type(exc).__name__)
        with lock:
            records.append(record)

    interval, started = 1.0 / rate_per_s, time.monotonic()
    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        for n in range(max(1, int(rate_per_s * seconds))):
            scheduled = started + n * interval
            if stop.wait(max(0.0, scheduled - time.monotonic())):
                break
            pool.submit(send, scheduled)
    return LoadResult(tuple(sorted(records, key=lambda r: r.start)), time.monotonic() - started)


@dataclass(frozen=True)
class Endpoint:
    grpc: str  # host:port
    http: str


class Load:
    """A background load on Triton replicas: clients alternate protocols and go round-robin over the
    endpoints. Start with `start()`, stop with `stop()` (the records); bounded by `max_seconds`."""

    def __init__(
        self,
        model: str,
        make_inputs: Callable[[], dict[str, np.ndarray]],
        endpoints: list[Endpoint],
        clients: int = 8,
        protocols: tuple[str, ...] = ("grpc", "http"),
        max_seconds: float = 600.0,
        version: str = "",
    ) -> None:
        self.model, self.make_inputs, self.endpoints = model, make_inputs, endpoints
        self.clients, self.protocols, self.max_seconds, self.version = clients, protocols, max_seconds, version
        self._stop = threading.Event()
        self._runs: list[tuple[threading.Thread, list[LoadResult]]] = []

    def start(self) -> Load:
        for protocol in self.protocols:
            indices = [i for i in range(self.clients) if self.protocols[i % len(self.protocols)] == protocol]
            if not indices:
                continue
            out: list[LoadResult] = []
            thread = threading.Thread(target=lambda p=protocol, ix=indices, o=out: o.append(self._run(p, ix)), daemon=True)
            thread.start()
            self._runs.append((thread, out))
        return self

    def stop(self) -> list[Record]:
        self._stop.set()
        for thread, _ in self._runs:
            thread.join(timeout=60)
        return sorted((r for _, out in self._runs for result in out for r in result.records), key=lambda r: r.start)

    def _run(self, protocol: str, indices: list[int]) -> LoadResult:
        from controlplane.triton.client import TritonClient

        opened: list[TritonClient] = []

        def make_caller(slot: int) -> Caller:
            index = indices[slot]
            clients = [TritonClient(e.grpc if protocol == "grpc" else e.http, protocol, timeout_s=30) for e in self.endpoints]
            opened.extend(clients)
            inputs, turn = self.make_inputs(), [index]

            def call() -> str:
                client = clients[turn[0] % len(clients)]
                turn[0] += 1
                try:
                    return client.infer(self.model, inputs, version=self.version).version
                except Exception as exc:
                    raise RuntimeError(f"{client.url}: {exc}") from exc

            return call

        try:
            return run_threads(make_caller, len(indices), self.max_seconds, self._stop, protocol)
        finally:
            for client in opened:
                client.close()


@dataclass(frozen=True)
class Switch:
    to_version: str
    start: float
    end: float


def judge_switches(records: list[Record], switches: list[Switch], allowed: set[str]) -> dict:
    """Failures, unexpected versions, and answers from the old version after a switch completed."""
    failures = [r for r in records if r.error]
    unexpected = [r for r in records if not r.error and r.version not in allowed]
    stale = []
    for i, switch in enumerate(switches):
        until = switches[i + 1].start if i + 1 < len(switches) else float("inf")
        stale += [r for r in records if not r.error and switch.end < r.start < until and r.version != switch.to_version]
    durations = [s.end - s.start for s in switches]
    return {
        "requests": len(records),
        "failures": len(failures),
        "failure_examples": [r.error for r in failures[:3]],
        "unexpected_versions": len(unexpected),
        "old_version_after_switch": len(stale),
        "switches": len(switches),
        "switch_s_median": float(np.median(durations)) if durations else None,
        "switch_s_max": max(durations) if durations else None,
        "by_protocol": {p: sum(1 for r in records if r.protocol == p) for p in sorted({r.protocol for r in records})},
    }
