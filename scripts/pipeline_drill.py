"""Pipeline promote/rollback under 8 concurrent clients (gRPC and HTTP) on one real Triton, and the pipeline's
overhead against calling its model directly, in the same run. Bounded: CYCLES promote+rollback cycles, 5 s per
overhead measurement.

    .venv/bin/python scripts/pipeline_drill.py [CYCLES]
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "release"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))
from test_pipeline import POST, PRE, RAW, _linear, _stamp  # noqa: E402  (the same steps the tests switch)

from controlplane.export.exporter import ExportRequest, export_model  # noqa: E402
from controlplane.model.config import ServingOptions, VersionPolicy  # noqa: E402
from controlplane.model.signature import parse_tensor_spec  # noqa: E402
from controlplane.readiness import free_port  # noqa: E402
from controlplane.release.pipeline import switch_pipeline  # noqa: E402
from controlplane.store import open_store  # noqa: E402
from controlplane.store.pipelines import publish_pipeline  # noqa: E402
from controlplane.store.repository import Repository  # noqa: E402
from controlplane.triton.client import TritonClient  # noqa: E402
from controlplane.triton.load import run_threads  # noqa: E402
from controlplane.triton.replicas import Replica  # noqa: E402
from controlplane.triton.server.local import LocalServers, ServerOptions  # noqa: E402


def main(cycles: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="pipeline-drill-"))
    repo = Repository(open_store(str(tmp / "repo")))
    (tmp / "repo").mkdir()
    modules = {}
    for k in (1, 2):
        modules[k] = _linear(k)
        bundle = export_model(ExportRequest(f"seed {k}", (parse_tensor_spec("x:float32:8"),), tmp / f"e{k}", ("y",),
                                            formats=("onnx",)), model=modules[k])
        repo.publish(bundle, "lin", "onnx", ServingOptions(version_policy=VersionPolicy("all")), {})
        (tmp / f"pre{k}.py").write_text(PRE.format(k=k))
        (tmp / f"post{k}.py").write_text(POST.format(k=k))
        publish_pipeline(repo, "pipe", "lin", k, tmp / f"pre{k}.py", tmp / f"post{k}.py")
    servers = LocalServers(tmp / "home")
    state = servers.start(ServerOptions(repository=repo.uri, name="drill", models=(), http_port=free_port(),
                                        grpc_port=free_port(), metrics_port=free_port(), timeout_s=120))
    replica, classify = Replica(f"127.0.0.1:{state.grpc_port}"), _stamp(modules)
    try:
        switch_pipeline(repo, "pipe", 1, [replica])

        def caller(model, check):
            def make(i):
                protocol, port = ("grpc", state.grpc_port) if i % 2 == 0 else ("http", state.http_port)
                client = TritonClient(f"127.0.0.1:{port}", protocol)
                inputs = {"raw": RAW} if model == "pipe" else {"x": (RAW.astype(np.float32) / 255.0)}
                return lambda: check(client.infer(model, inputs).outputs)
            return make

        stop, out, times = threading.Event(), [], []
        load = threading.Thread(target=lambda: out.append(run_threads(caller("pipe", classify), 8, 600, stop)))
        load.start()
        for _ in range(cycles):
            for target in (2, 1):
                start = time.monotonic()
                switch_pipeline(repo, "pipe", target, [replica])
                times.append(time.monotonic() - start)
        stop.set()
        load.join()
        records = out[0].records
        answers = [r.version for r in records if not r.error]
        overhead = {}
        for model in ("pipe", "pipe.model"):
            result = run_threads(caller(model, lambda _o: ""), 4, 5.0)
            overhead[model] = {"requests_per_s": round(result.requests_per_s, 1), "p50_ms": result.percentile_ms(50),
                               "p99_ms": result.percentile_ms(99), "failures": result.failures}
        return {
            "clients": 8, "switches": len(times), "requests": len(records),
            "failures": sum(1 for r in records if r.error),
            "mixed_version_answers": sum(1 for a in answers if a not in ("111", "222")),
            "answers_by_versions": {a: answers.count(a) for a in sorted(set(answers))},
            "switch_s_median": round(float(np.median(times)), 3), "switch_s_max": round(max(times), 3),
            "overhead_4_clients_5s": overhead, "torch": torch.__version__,
        }
    finally:
        replica.close()
        servers.stop("drill", grace_s=15)


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10), indent=2))
