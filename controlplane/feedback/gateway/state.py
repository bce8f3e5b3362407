"""The gateway's state: its services and what it keeps between requests, one typed object on app.state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

from controlplane.feedback.gateway.answer import IdSource
from controlplane.feedback.gateway.config import GatewayConfig
from controlplane.feedback.gateway.index import PredictionIndex
from controlplane.feedback.gateway.metrics import GatewayMetrics
from controlplane.feedback.gateway.upstream import Upstream
from controlplane.release.canary import Router

if TYPE_CHECKING:
    from controlplane.feedback.predlog import PredictionLog
    from controlplane.feedback.predrows import PredictionRows


@dataclass
class GatewayState:
    config: GatewayConfig
    metrics: GatewayMetrics
    upstream: Upstream
    index: PredictionIndex
    router: Router = field(default_factory=Router)
    ids: IdSource = field(default_factory=IdSource)
    log: PredictionLog | None = None  # opened at start-up when config.log_uri is set
    tasks: set[asyncio.Future] = field(default_factory=set)  # shadow requests in flight
    in_flight: dict[str, int] = field(default_factory=dict)  # requests sent to Triton and not yet answered, per model

    def log_predictions(self, model: str, rows: PredictionRows) -> None:
        if self.log is not None:
            self.log.predictions(model).append(rows)

    def log_feedback(self, records: list[dict]) -> None:
        if self.log is not None:
            for record in records:
                self.log.feedback.append(record)

    def log_figures(self) -> tuple[int, int] | None:
        return (self.log.dropped, self.log.write_errors) if self.log is not None else None

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for background requests, so their records reach the log before it closes."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout_s)

    def spawn(self, coroutine) -> None:
        """Run in the background, keeping a reference until done (the loop holds only weak ones)."""
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def state_of(request: Request) -> GatewayState:
    return request.app.state.gateway
