"""The conformance zoo: each architecture exported in both formats, published, served by one real Triton, and
compared with eager PyTorch over gRPC and HTTP at two batch sizes (and two lengths where a dim is dynamic).

One server is shared by the whole module; each test loads its two models explicitly and unloads them after, so
memory stays at two stub processes. Whole module: about 60-75 s on the 2-core CI machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import free_port
from zoo import ZOO

from controlplane.export.exporter import ExportRequest, export_model
from controlplane.export.samples import random_sample
from controlplane.model.config import ServingOptions
from controlplane.model.signature import parse_tensor_spec
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.replicas import Replica
from controlplane.triton.server.local import LocalServers, ServerOptions

BATCHES = (1, 3)
LENGTHS = (4, 11)  # neither is a size the export traced or checked (3, 5, 9)


@pytest.fixture(scope="module")
def zoo_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo-repo")
    repo = Repository(open_store(str(root)))
    servers = LocalServers(tmp_path_factory.mktemp("zoo-home"))
    options = ServerOptions(repository=str(root), name="zoo", models=(), http_port=free_port(), grpc_port=free_port(),
                            metrics_port=free_port(), timeout_s=120, exit_timeout_s=5)
    state = servers.start(options)
    try:
        yield repo, state
    finally:
        servers.stop("zoo", grace_s=15)


def _eager(name: str, inputs: dict[str, np.ndarray], output_names) -> dict[str, np.ndarray]:
    import zoo

    model = getattr(zoo, name)().eval()
    with torch.inference_mode():
        result = model(*[torch.from_numpy(a.copy()) for a in inputs.values()])
    values = list(result.values()) if isinstance(result, dict) else [result] if isinstance(result, torch.Tensor) else list(result)
    return {n: v.numpy() for n, v in zip(output_names, values)}


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_architecture_serves_like_eager(name, zoo_server, tmp_path):
    repo, state = zoo_server
    arch, _cls = ZOO[name]
    specs = tuple(parse_tensor_spec(i) for i in arch.inputs)
    bundle = export_model(ExportRequest(f"zoo:{name}", specs, tmp_path / name, arch.outputs, atol=arch.atol))
    assert all(r["passed"] for r in bundle.parity.values())
    if arch.dynamic_length:  # checked at three lengths besides the batch
        assert bundle.parity["onnx"]["samples"] == 6
    served = {"onnx": name, "torchscript": f"{name}_ts"}
    for fmt, model in served.items():
        repo.publish(bundle, model, fmt, ServingOptions(), {"zoo": name})
    replica = Replica(f"127.0.0.1:{state.grpc_port}")
    rng = np.random.default_rng(1)
    try:
        for model in served.values():
            replica.load(model)
        for batch in BATCHES:
            for length in LENGTHS if arch.dynamic_length else LENGTHS[:1]:
                inputs = random_sample(specs, batch, rng, 10, length)
                expected = _eager(name, inputs, arch.outputs)
                for model in served.values():
                    for protocol, port in (("grpc", state.grpc_port), ("http", state.http_port)):
                        with TritonClient(f"127.0.0.1:{port}", protocol) as client:
                            got = client.infer(model, inputs).outputs
                        for out, want in expected.items():
                            if want.ndim == 1:  # a scalar per row is served as dims [1] (config reshape): [batch, 1]
                                want = want.reshape(-1, 1)
                            assert got[out].shape == want.shape, (model, protocol, batch, length, out)
                            np.testing.assert_allclose(got[out], want, atol=arch.atol, rtol=1e-3,
                                                       err_msg=f"{model} over {protocol}, batch {batch}, length {length}")
    finally:
        for model in served.values():
            replica.unload(model)
        replica.close()
