"""A bounded closed-loop load: N clients send requests round-robin over replicas and record every answer.

Each record keeps when the request started and ended, which replica and protocol, the version that
answered, and the error if any: enough to judge a switch (no failures, the right versions, when).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Record:
    client: int
    protocol: str
    replica: str
    start: float  # time.monotonic()
    end: float
    version: str
    error: str = ""


@dataclass(frozen=True)
class Endpoint:
    grpc: str  # host:port
    http: str


class Load:
    """Start with `start()`, stop with `stop()`; `records` holds every request. Bounded by `max_seconds`."""

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
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Load:
        deadline = time.monotonic() + self.max_seconds
        for index in range(self.clients):
            protocol = self.protocols[index % len(self.protocols)]
            thread = threading.Thread(target=self._run, args=(index, protocol, deadline), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Record]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return sorted(self.records, key=lambda r: r.start)

    def _run(self, index: int, protocol: str, deadline: float) -> None:
        from controlplane.errors import MlctlError
        from controlplane.triton.client import TritonClient

        clients = [TritonClient(e.grpc if protocol == "grpc" else e.http, protocol, timeout_s=30) for e in self.endpoints]
        inputs = self.make_inputs()
        local: list[Record] = []
        turn = index
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                client = clients[turn % len(clients)]
                turn += 1
                start = time.monotonic()
                try:
                    result = client.infer(self.model, inputs, version=self.version)
                    local.append(Record(index, protocol, client.url, start, time.monotonic(), result.version))
                except MlctlError as exc:
                    local.append(Record(index, protocol, client.url, start, time.monotonic(), "", str(exc)))
        finally:
            for client in clients:
                client.close()
            with self._lock:
                self.records.extend(local)


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
