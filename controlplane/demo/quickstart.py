"""The quickstart: train the digits classifier twice, export both formats, publish two versions each,
serve them with the local Triton, and measure accuracy from Triton's own answers over HTTP and gRPC.

Re-running is idempotent: a version whose manifest records the same training run is reused, never
published again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controlplane.demo import digits as demo
from controlplane.errors import CheckFailedError
from controlplane.export.exporter import ExportRequest, export_model
from controlplane.model.config import ServingOptions, VersionPolicy
from controlplane.model.signature import TensorSpec
from controlplane.store import open_store
from controlplane.store.local import LocalStore
from controlplane.store.repository import Repository
from controlplane.triton.server.local import LocalServers, ServerOptions

Progress = Callable[[str], None]
MODEL_NAMES = {"onnx": "digits", "torchscript": "digits_torchscript"}
RUNS = ({"seed": 0, "epochs": 2}, {"seed": 1, "epochs": 25})  # version 1 undertrained, version 2 better
MAX_BATCH = 8


@dataclass(frozen=True)
class QuickstartOptions:
    repository: str
    home: Path
    workdir: Path = Path("quickstart-out")
    server: ServerOptions | None = None  # ports and name of the server to (re)start


@dataclass
class Evaluation:
    model: str
    version: int
    format: str
    protocol: str
    accuracy: float
    offline_accuracy: float
    samples: int


@dataclass
class QuickstartResult:
    evaluations: list[Evaluation] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    server: dict = field(default_factory=dict)
    sample_file: str = ""
    timings_s: dict = field(default_factory=dict)


def run_quickstart(options: QuickstartOptions, progress: Progress | None = None) -> QuickstartResult:
    say = progress or (lambda _msg: None)
    result = QuickstartResult()
    started = time.monotonic()
    data = demo.load_digits_split()
    store = open_store(options.repository)
    if isinstance(store, LocalStore):
        store.root.mkdir(parents=True, exist_ok=True)
    repo = Repository(store)
    options.workdir.mkdir(parents=True, exist_ok=True)

    offline: dict[tuple[str, int], float] = {}
    for run in RUNS:
        run_id = f"seed{run['seed']}-epochs{run['epochs']}"
        versions = {fmt: _find_run(repo, name, run_id) for fmt, name in MODEL_NAMES.items()}
        if all(v is not None for v in versions.values()):
            for fmt, name in MODEL_NAMES.items():
                version = versions[fmt]
                offline[(name, version)] = repo.manifest(name, version).metadata["accuracy"]
                result.reused.append(f"{name}:{version}")
            continue
        say(f"training the digits classifier ({run_id})")
        model = demo.train_classifier(data, seed=run["seed"], epochs=run["epochs"])
        accuracy = float((demo.predict(model, data.x_test) == data.y_test).mean())
        export_dir = options.workdir / "exports" / run_id
        bundle = export_model(
            ExportRequest(
                source=f"controlplane.demo.digits:build_classifier (trained {run_id})",
                inputs=(TensorSpec(demo.INPUT_NAME, "float32", (64,)),),
                out_dir=export_dir,
                output_names=(demo.OUTPUT_NAME,),
                max_batch_size=MAX_BATCH,
                overwrite=True,
            ),
            progress=say,
            model=model,
        )
        serving = ServingOptions(version_policy=VersionPolicy("all"))
        metadata = {"accuracy": accuracy, "test_samples": len(data.y_test), "quickstart_run": run_id, **run}
        reference = export_dir / "reference.npz"  # the held-out split: the drift baseline of this version
        np.savez(reference, features=data.x_test, predicted=demo.predict(model, data.x_test), labels=data.y_test)
        for fmt, name in MODEL_NAMES.items():
            version = versions[fmt]
            if version is None:
                version = repo.publish(bundle, name, fmt, serving, metadata, reference).version
                result.published.append(f"{name}:{version}")
            offline[(name, version)] = accuracy
    result.timings_s["train_export_publish"] = round(time.monotonic() - started, 2)

    servers = LocalServers(options.home, progress=say)
    server_options = options.server or ServerOptions(repository=options.repository)
    if servers.running(server_options.name):
        say(f"restarting server {server_options.name!r}")
        servers.stop(server_options.name)
    t0 = time.monotonic()
    state = servers.start(server_options)
    result.timings_s["server_start_to_ready"] = round(time.monotonic() - t0, 2)
    result.server = state.to_dict()

    t0 = time.monotonic()
    for (name, version), accuracy in sorted(offline.items()):
        fmt = next(f for f, n in MODEL_NAMES.items() if n == name)
        for protocol, url in (("http", state.http_url), ("grpc", state.grpc_url)):
            served = _served_accuracy(url, protocol, name, version, data)
            result.evaluations.append(Evaluation(name, version, fmt, protocol, served, accuracy, len(data.y_test)))
            say(f"{name} v{version} over {protocol}: accuracy {served:.4f} (offline {accuracy:.4f})")
    result.timings_s["evaluate"] = round(time.monotonic() - t0, 2)

    sample = options.workdir / "digits_sample.json"
    sample.write_text(json.dumps({demo.INPUT_NAME: data.x_test[:2].tolist()}))
    result.sample_file = str(sample)
    result.timings_s["total"] = round(time.monotonic() - started, 2)
    return result


def _find_run(repo: Repository, name: str, run_id: str) -> int | None:
    if name not in repo.model_names():
        return None
    for version in repo.versions(name):
        if repo.manifest(name, version).metadata.get("quickstart_run") == run_id and not repo.verify(name, version):
            return version
    return None


def _served_accuracy(url: str, protocol: str, name: str, version: int, data: demo.DigitsData) -> float:
    from controlplane.triton.client import TritonClient

    correct = 0
    with TritonClient(url, protocol) as client:
        for start in range(0, len(data.x_test), MAX_BATCH):
            batch = data.x_test[start : start + MAX_BATCH]
            answer = client.infer(name, {demo.INPUT_NAME: batch}, version=str(version))
            if answer.version != str(version):
                raise CheckFailedError(f"asked for version {version} of {name}, Triton answered with {answer.version}")
            predicted = np.argmax(answer.outputs[demo.OUTPUT_NAME], axis=1)
            correct += int((predicted == data.y_test[start : start + MAX_BATCH]).sum())
    return correct / len(data.y_test)
