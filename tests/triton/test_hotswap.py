"""Hot-swap hardening against a real tritonserver: configs complete enough for --disable-auto-complete-config,
warm-up before a version is ready, a queue policy that rejects at once (classified OVERLOADED). The long forms
(100 cycles, the neighbour's p99) are scripts/hotswap_soak.py and scripts/switch_load_test.py."""

from __future__ import annotations

import asyncio
import urllib.request

import numpy as np
import pytest
from support import free_port

from controlplane.model.config import ServingOptions
from controlplane.quality.reference import ReferenceSample
from controlplane.release.lifecycle import Lifecycle
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.failures import Failure, classify
from controlplane.triton.load import run_async
from controlplane.triton.server.local import LocalServers, ServerOptions
from controlplane.triton.server.options import common_args
from controlplane.triton.targets import Targets

pytestmark = pytest.mark.e2e
REJECT_FAST_MS = 50.0  # a queue-full reject, client included, on a busy 2-core machine (Triton answers in < 1 ms)


def test_managed_servers_skip_auto_complete_unless_asked():
    assert "--disable-auto-complete-config" in common_args(ServerOptions(repository="r"), [])
    assert "--disable-auto-complete-config" not in common_args(ServerOptions(repository="r", auto_complete_config=True), [])


def counter(metrics_url: str, name: str, model: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith(name + "{") and f'model="{model}"' in l)


@pytest.fixture(scope="module")
def server(tmp_path_factory, exports):
    tmp_path = tmp_path_factory.mktemp("hot")
    (tmp_path / "repo").mkdir()
    repo = Repository(open_store(str(tmp_path / "repo")))
    repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
    np.savez(tmp_path / "reference.npz", features=np.full((3, 8), 0.25, np.float32), predicted=np.zeros(3, np.int64))
    repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {}, ReferenceSample.read(tmp_path / "reference.npz"))
    repo.publish(exports["mlp"], "cold", "onnx", ServingOptions(warmup=False), {})
    repo.publish(exports["mlp"], "bounded", "onnx", ServingOptions(max_queue_delay_us=50_000, max_queue_size=1), {})
    repo.publish(exports["multi"], "tokens", "onnx", ServingOptions(), {})  # integer inputs warm up on zeros
    servers = LocalServers(tmp_path / "home")
    state = servers.start(ServerOptions(repository=repo.uri, name="hot", http_port=free_port(), grpc_port=free_port(),
                                        metrics_port=free_port(), exit_timeout_s=2))
    try:
        yield repo, state
    finally:
        servers.stop("hot", grace_s=10)


def test_generated_configs_load_without_auto_complete_and_warm_up_before_ready(server):
    repo, state = server
    # before any request: the warm-up sample ran once in each warmed model, never in the cold one
    assert counter(state.metrics_url, "mlctl_execute_duration_seconds_count", "mlp") == 1
    assert counter(state.metrics_url, "mlctl_execute_duration_seconds_count", "tokens") == 1
    assert counter(state.metrics_url, "mlctl_execute_duration_seconds_count", "cold") == 0
    # a switch ends only once the warmed version answers: the new version has run its warm-up by then, on its
    # reference sample's first row (Triton refuses the load when the file is missing or of the wrong size)
    assert repo.warmup_files("mlp", 1) == {} and repo.warmup_files("mlp", 2) == {"x": "2/x"}
    assert repo.store.read_bytes("mlp/warmup/2/x") == np.full(8, 0.25, np.float32).tobytes()
    report = Lifecycle(repo, Targets({"production": (state.grpc_url,)})).promote("mlp", 2, "production", create_channel=True)
    assert report.outcome == "succeeded"
    assert 'input_data_file: "2/x"' in repo.store.read_bytes("mlp/configs/production.pbtxt").decode()
    assert counter(state.metrics_url, "mlctl_execute_duration_seconds_count", "mlp") >= 2


def test_a_full_queue_rejects_at_once_and_is_classified_overloaded(server):
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.utils import InferenceServerException

    _, state = server
    x = np.zeros((1, 8), np.float32)

    def make_caller(_index: int):
        client = grpcclient.InferenceServerClient(state.grpc_url)
        tensor = grpcclient.InferInput("x", [1, 8], "FP32")
        tensor.set_data_from_numpy(x)

        async def call() -> str:
            try:
                return (await client.infer("bounded", [tensor])).get_response().model_version
            except InferenceServerException as exc:
                raise RuntimeError(classify(exc).kind.value) from exc
        return call

    result = asyncio.run(run_async(make_caller, 16, 3.0))
    rejected = [r for r in result.records if r.error]
    accepted = [r for r in result.records if not r.error]
    assert accepted and rejected
    assert {r.error for r in rejected} == {Failure.OVERLOADED.value}
    # a reject does not wait out the 50 ms batching window, as an accepted request does
    assert float(np.median([r.latency_s for r in rejected])) * 1000 < REJECT_FAST_MS
    assert float(np.median([r.latency_s for r in rejected])) < float(np.median([r.latency_s for r in accepted]))
