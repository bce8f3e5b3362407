"""One load point, measured the way perf_analyzer does, on the package's one load generator:

- closed loop: `concurrency` clients, each sending its next request when the last is answered (asyncio
  workers on one gRPC connection, as the serving benchmark measures);
- open loop: requests at a fixed rate whatever the answers, latency counted from the scheduled time.

Each point runs warm-up windows (discarded), then windows until the last few agree (stable) or a cap is
reached (reported unstable); the figures pool the stable windows, and Triton's statistics over exactly those
windows give the server-side time per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from controlplane.errors import UsageError
from controlplane.perf.server_stats import StatisticsReader, breakdown
from controlplane.perf.windows import WindowPolicy, is_stable, pooled
from controlplane.triton.load import LoadResult, run_async, run_open_loop

MODES = ("concurrency", "rate")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Point:
    mode: str  # concurrency | rate
    level: float
    rows_per_request: int
    stable: bool
    windows: int  # measured windows (warm-up not counted)
    requests: int
    errors: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_examples: tuple[str, ...] = ()
    server: dict | None = None  # per-request server time by phase (server_stats.breakdown)

    def to_dict(self) -> dict:
        return asdict(self)


class PerfSession:
    """Load points against one model on one Triton gRPC endpoint; reusable across points (and across reloads
    of the model with other configs). Close it when done."""

    def __init__(self, url: str, model: str, inputs: dict[str, np.ndarray], version: str = "",
                 policy: WindowPolicy | None = None, server_stats: bool = True) -> None:
        self.url, self.model, self.inputs, self.version = url, model, inputs, version
        self.policy = policy or WindowPolicy()
        self.rows = int(next(iter(inputs.values())).shape[0]) if inputs else 1
        self._loop = asyncio.new_event_loop()
        self._aio = self._loop.run_until_complete(self._open_aio())
        self._sync: dict[int, object] = {}
        self._stats = StatisticsReader(url, model, version) if server_stats else None

    async def _open_aio(self):
        from tritonclient.grpc import aio

        from controlplane.model.signature import wire_type
        from controlplane.triton import tls

        client = aio.InferenceServerClient(self.url, **tls.grpc_kwargs(self.url))  # TLS where the settings say so
        tensors = []
        for name, array in self.inputs.items():
            tensor = aio.InferInput(name, list(array.shape), wire_type(str(array.dtype)))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        self._tensors = tensors
        return client

    def _closed_window(self, concurrency: int, seconds: float) -> LoadResult:
        async def call() -> str:
            await self._aio.infer(self.model, self._tensors, model_version=self.version)
            return ""

        return self._loop.run_until_complete(run_async(lambda _: call, concurrency, seconds))

    def _open_window(self, rate: float, seconds: float) -> LoadResult:
        from controlplane.triton.client import TritonClient

        def make_caller(index: int):
            client = self._sync.get(index) or self._sync.setdefault(index, TritonClient(self.url, "grpc"))
            return lambda: client.infer(self.model, self.inputs, self.version).version

        return run_open_loop(make_caller, rate, seconds)

    def point(self, mode: str, level: float, policy: WindowPolicy | None = None) -> Point:
        """One load point, in the session's windows or `policy`'s (e.g. a tune's shorter screening windows)."""
        policy = policy or self.policy
        if mode not in MODES:
            raise UsageError(f"load mode {mode!r} must be one of {', '.join(MODES)}")
        if level <= 0 or (mode == "concurrency" and level != int(level)):
            raise UsageError(f"{mode} {level} must be a positive {'whole number' if mode == 'concurrency' else 'rate'}")
        window = ((lambda: self._closed_window(int(level), policy.seconds)) if mode == "concurrency"
                  else (lambda: self._open_window(level, policy.seconds)))
        for _ in range(policy.warmup_windows):
            window()
        windows: list[LoadResult] = []
        snapshots = [self._stats.snapshot()] if self._stats else []
        while len(windows) < policy.max_windows:
            windows.append(window())
            if self._stats:
                snapshots.append(self._stats.snapshot())
            if is_stable(windows, policy):
                break
        used = windows[-policy.stable_windows:]
        figures = pooled(used)
        server = breakdown(snapshots[-1].minus(snapshots[-1 - len(used)])) if self._stats else None
        return Point(mode, level, self.rows, is_stable(windows, policy), len(windows), figures.requests, figures.errors,
                     figures.requests_per_s, round(figures.requests_per_s * self.rows, 1), figures.p50_ms, figures.p90_ms,
                     figures.p95_ms, figures.p99_ms, figures.error_examples, server)

    def sweep(self, mode: str, levels: list[float], progress: Progress | None = None) -> list[Point]:
        points = []
        for level in levels:
            points.append(self.point(mode, level))
            if progress:
                p = points[-1]
                progress(f"{mode} {level:g}: {p.requests_per_s:.1f} req/s, p99 {p.p99_ms} ms, errors {p.errors}"
                         f"{'' if p.stable else ' (unstable)'}")
        return points

    def close(self) -> None:
        self._loop.run_until_complete(self._aio.close())
        self._loop.close()
        for client in self._sync.values():
            client.close()
        if self._stats:
            self._stats.close()


def open_session(url: str, model: str, version: str = "", rows: int = 1, input_file=None,
                 policy: WindowPolicy | None = None) -> PerfSession:
    """Check the target answers for the model (UnavailableError, NotFoundError otherwise), read its signature,
    build the request's inputs (random, or from `input_file`) and open a session."""
    from controlplane.model.config import signature_of
    from controlplane.perf.inputs import file_inputs, random_inputs
    from controlplane.triton.client import TritonClient

    with TritonClient(url, "grpc", timeout_s=10) as client:
        config = client.model_config(model, version)
    signature = signature_of(config, api=True)
    inputs = file_inputs(signature, input_file, rows) if input_file else random_inputs(signature, rows)
    return PerfSession(url, model, inputs, version, policy)
