"""Triton's statistics API: cumulative time spent per phase for a model. The difference of two snapshots,
divided by the requests between them, is where a request's server time went: waiting in the queue, copying
its inputs, inferring, copying its outputs."""

from __future__ import annotations

from dataclasses import dataclass, fields

from controlplane.errors import UnavailableError

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class StatsSnapshot:
    success: int = 0
    success_ns: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    inference_count: int = 0  # rows (batch elements) inferred
    execution_count: int = 0  # model executions (one per batch)

    def minus(self, earlier: StatsSnapshot) -> StatsSnapshot:
        return StatsSnapshot(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields(self)})


def parse_statistics(answer: dict) -> StatsSnapshot:
    """A snapshot from the statistics API's JSON answer (every version of the model summed; int64s as text)."""
    totals = dict.fromkeys((f.name for f in fields(StatsSnapshot)), 0)
    for entry in answer.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        totals["success"] += int(stats.get("success", {}).get("count", 0))
        totals["success_ns"] += int(stats.get("success", {}).get("ns", 0))
        for phase in PHASES:
            totals[f"{phase}_ns"] += int(stats.get(phase, {}).get("ns", 0))
        totals["inference_count"] += int(entry.get("inference_count", 0))
        totals["execution_count"] += int(entry.get("execution_count", 0))
    return StatsSnapshot(**totals)


def breakdown(delta: StatsSnapshot) -> dict:
    """Microseconds per successful request in each phase, the server's whole time, and the mean batch size."""
    if delta.success <= 0:
        return {"requests": 0}
    per = {f"{phase}_us": round(getattr(delta, f"{phase}_ns") / delta.success / 1000, 1) for phase in PHASES}
    return {
        "requests": delta.success,
        **per,
        "server_us": round(delta.success_ns / delta.success / 1000, 1),
        "mean_batch": round(delta.inference_count / delta.execution_count, 2) if delta.execution_count else None,
    }


class StatisticsReader:
    """Snapshots of one model's statistics from a Triton gRPC endpoint."""

    def __init__(self, url: str, model: str, version: str = "", timeout_s: float = 10.0) -> None:
        import tritonclient.grpc as grpcclient

        self.url, self.model, self.version, self.timeout_s = url, model, version, timeout_s
        from controlplane.triton import tls

        self._client = grpcclient.InferenceServerClient(url, **tls.grpc_kwargs(url))

    def snapshot(self) -> StatsSnapshot:
        from tritonclient.utils import InferenceServerException

        try:
            answer = self._client.get_inference_statistics(self.model, self.version, as_json=True, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise UnavailableError(f"statistics of {self.model!r} from Triton at {self.url}: {exc.message()}") from exc
        return parse_statistics(answer)

    def close(self) -> None:
        self._client.close()
