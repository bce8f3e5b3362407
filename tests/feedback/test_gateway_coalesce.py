"""Requests ready together go to Triton as one (`mlctl gateway serve --coalesce`), against the real Triton:
each client gets exactly its own rows, Triton counts fewer requests for the same rows, a group fails as a whole,
and through the gateway every client's rows are logged under its own ids."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from support import PREDICT_KEY
from tritonclient.utils import InferenceServerException

from controlplane.feedback.gateway.coalesce import Coalescer
from controlplane.feedback.gateway.triton_http import TritonHTTP
from controlplane.feedback.gateway.v2 import Tensor

pytestmark = pytest.mark.e2e


def pixels(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((rows, 64), dtype=np.float32)


def tensors_of(x: np.ndarray) -> tuple[Tensor, ...]:
    return (Tensor("pixels", "FP32", x.shape, x.tobytes()),)


def counts(stage, model: str = "classifier") -> tuple[int, int]:
    """Triton's (requests, rows) for the model so far."""
    import tritonclient.http as httpclient

    stats = httpclient.InferenceServerClient(stage["triton"].http_url).get_inference_statistics(model)["model_stats"]
    return sum(s["inference_stats"]["success"]["count"] for s in stats), sum(s["inference_count"] for s in stats)


def with_coalescer(stage, body):
    """`body(http, coalescer)` on a new event loop, with Triton's HTTP pool and a coalescer over it."""
    async def run():
        http = TritonHTTP(stage["triton"].http_url)
        try:
            return await body(http, Coalescer(http.infer))
        finally:
            await http.close()

    return asyncio.run(run())


def scores(outputs: list[Tensor]) -> np.ndarray:
    (tensor,) = outputs
    return tensor.array()


def test_requests_ready_together_go_as_one_and_each_gets_its_own_rows(stage):
    sizes = [1, 2, 3, 1, 2, 3]  # 7 rows, then 9 would pass the limit of 8: a second group of 2 + 3
    batches = [pixels(n, seed) for seed, n in enumerate(sizes)]

    async def run(http, coalescer):
        alone = [await http.infer("classifier", tensors_of(x)) for x in batches]
        before = counts(stage)
        together = await asyncio.gather(*(coalescer.infer("classifier", tensors_of(x), "", 8) for x in batches))
        return alone, before, counts(stage), together, coalescer

    alone, before, after, together, coalescer = with_coalescer(stage, run)
    assert (coalescer.requests, coalescer.sent) == (6, 2)
    assert (after[0] - before[0], after[1] - before[1]) == (2, sum(sizes))  # two Triton requests, every row once
    for x, (version, outputs), (_, own) in zip(batches, together, alone):
        assert version == "1" and outputs[0].shape == (len(x), 10)
        np.testing.assert_allclose(scores(outputs), scores(own), rtol=1e-5, atol=1e-7)


def test_a_lone_request_goes_as_it_came_and_a_group_fails_as_a_whole(stage):
    x = pixels(2, 7)

    async def run(http, coalescer):
        lone = await coalescer.infer("classifier", tensors_of(x), "", 8)
        failed = await asyncio.gather(*(coalescer.infer("absent", tensors_of(x), "", 8) for _ in range(3)),
                                      return_exceptions=True)
        return lone, failed, coalescer, await http.infer("classifier", tensors_of(x))

    (version, outputs), failed, coalescer, direct = with_coalescer(stage, run)
    assert version == "1"
    np.testing.assert_allclose(scores(outputs), scores(direct[1]), rtol=1e-5, atol=1e-7)
    assert (coalescer.requests, coalescer.sent) == (4, 2)
    assert all(isinstance(f, InferenceServerException) and "absent" in str(f) for f in failed), failed


@pytest.mark.parametrize("turns", [1, 2], ids=["before-it-is-sent", "while-it-is-on-its-way"])
def test_when_the_first_request_of_a_group_is_cancelled_the_others_still_get_their_answers(stage, turns):
    x, y = pixels(1, 8), pixels(2, 9)

    async def run(http, coalescer):
        first = asyncio.ensure_future(coalescer.infer("classifier", tensors_of(x), "", 8))
        second = asyncio.ensure_future(coalescer.infer("classifier", tensors_of(y), "", 8))
        for _ in range(turns):  # turn 1: the first leads a group and yields, the second joins; turn 2: it is sent
            await asyncio.sleep(0)
        assert len(coalescer._sending) == turns - 1  # the group's request: not yet made / on its way
        first.cancel()
        done = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
        return done, await http.infer("classifier", tensors_of(y)), coalescer

    (first, second), direct, coalescer = with_coalescer(stage, run)
    assert isinstance(first, asyncio.CancelledError)
    version, outputs = second
    assert version == "1" and outputs[0].shape == (2, 10)
    np.testing.assert_allclose(scores(outputs), scores(direct[1]), rtol=1e-5, atol=1e-7)
    assert (coalescer.requests, coalescer.sent) == (2, 1)


@pytest.mark.parametrize("upstream", ["http", "grpc"])
def test_through_the_gateway_each_client_gets_and_logs_its_own_rows(stage, gateway_factory, tmp_path, upstream):
    import pyarrow.parquet as pq
    import tritonclient.http as httpclient
    import tritonclient.http.aio as aioclient

    over = ("--triton-http-url", stage["triton"].http_url) if upstream == "http" else ()  # else Triton's gRPC
    gateway = gateway_factory(log=tmp_path / "log", options=(*over, "--coalesce"))
    batches = [pixels(1 + i % 3, 100 + i) for i in range(24)]
    direct = httpclient.InferenceServerClient(stage["triton"].http_url)

    def inputs(x):
        tensor = aioclient.InferInput("pixels", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        return [tensor]

    async def round_of(client) -> list:
        return await asyncio.gather(*(client.infer("classifier", inputs(x), headers={"X-API-Key": PREDICT_KEY}) for x in batches))

    async def run() -> tuple[list, list[int]]:
        client = aioclient.InferenceServerClient(gateway.url.removeprefix("http://"), conn_limit=len(batches))
        try:
            answers, grouped = [], []
            for _ in range(4):  # rounds of concurrent requests; at least one should meet others in the gateway
                before = counts(stage)
                answers += await round_of(client)
                after = counts(stage)
                assert after[1] - before[1] == sum(len(x) for x in batches)  # every row reached Triton once
                grouped.append(after[0] - before[0])
            return answers, grouped
        finally:
            await client.close()

    answers, requests = asyncio.run(run())
    assert min(requests) < len(batches), f"no round had requests sent together: Triton requests per round {requests}"
    metrics = {line.split(" ")[0]: float(line.split(" ")[1]) for line in gateway.metrics().splitlines()
               if line.startswith("mlctl_gateway_coalesced")}
    assert metrics == {'mlctl_gateway_coalesced_requests_total{model="classifier"}': len(answers),
                       'mlctl_gateway_coalesced_triton_requests_total{model="classifier"}': sum(requests)}
    logged_ids = []
    for i, result in enumerate(answers):
        x = batches[i % len(batches)]
        expected = direct.infer("classifier", [httpclient.InferInput("pixels", list(x.shape), "FP32").set_data_from_numpy(x)])
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected.as_numpy("probabilities"), rtol=1e-5, atol=1e-7)
        ids = result.get_response()["parameters"]["mlctl_prediction_ids"].split(",")
        assert len(ids) == len(x)
        logged_ids += ids
    gateway.stop()
    rows = [r for path in sorted((tmp_path / "log").rglob("*.parquet")) for r in pq.ParquetFile(path).read().to_pylist()
            if "predictions" in str(path)]
    assert sorted(r["prediction_id"] for r in rows) == sorted(logged_ids) and len(set(logged_ids)) == len(logged_ids)
    by_id = {r["prediction_id"]: r for r in rows}
    for i, result in enumerate(answers):  # each row's features logged under the id its own client got
        x = batches[i % len(batches)]
        for row, prediction_id in zip(x, result.get_response()["parameters"]["mlctl_prediction_ids"].split(",")):
            np.testing.assert_array_equal(np.asarray(by_id[prediction_id]["features"], dtype=np.float32), row)
