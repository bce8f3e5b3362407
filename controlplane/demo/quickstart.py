"""The quickstart: train the digits classifier twice, export both formats, publish two versions each,
serve them with the local Triton, and measure accuracy from Triton's own answers over HTTP and gRPC.

Re-running is idempotent: a version whose manifest records the same training run is reused, never
published again.

It runs its own server (named "quickstart" unless told otherwise) and restarts it on a re-run, but never
stops a server that serves another repository or a channel: that one belongs to the user, and the
quickstart refuses before it trains anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controlplane.demo import digits as demo
from controlplane.errors import CheckFailedError, ConflictError
from controlplane.export.exporter import ExportRequest, export_model
from controlplane.model.config import ServingOptions, VersionPolicy
from controlplane.model.signature import TensorSpec
from controlplane.quality.reference import ReferenceSample
from controlplane.store import open_store
from controlplane.store.local import LocalStore
from controlplane.store.repository import Repository
from controlplane.triton.server.local import LocalServers, ServerOptions
from controlplane.triton.server.process import port_in_use
from controlplane.triton.server.state import ServerState

Progress = Callable[[str], None]
MODEL_NAMES = {"onnx": "digits", "torchscript": "digits_torchscript"}
RUNS = ({"seed": 0, "epochs": 2}, {"seed": 1, "epochs": 25})  # version 1 undertrained, version 2 better
MAX_BATCH = 8
SERVER_NAME = "quickstart"  # its own server: a re-run restarts this one, never the user's "default"


@dataclass(frozen=True)
class QuickstartOptions:
    repository: str
    home: Path
    workdir: Path = Path("quickstart-out")
    server: ServerOptions | None = None  # ports and name of the server to (re)start [default: "quickstart"]


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
    store = open_store(options.repository)
    repo = Repository(store)
    servers = LocalServers(options.home, progress=say)
    server_options = options.server or ServerOptions(repository=options.repository, name=SERVER_NAME)
    existing = check_server_slot(servers, server_options, repo.uri)  # before minutes of training, not after
    data = demo.load_digits_split()
    if isinstance(store, LocalStore):
        store.root.mkdir(parents=True, exist_ok=True)
    options.workdir.mkdir(parents=True, exist_ok=True)

    offline = _train_export_publish(repo, options, data, result, say)
    result.timings_s["train_export_publish"] = round(time.monotonic() - started, 2)

    if existing is not None:
        say(f"restarting the quickstart's server {server_options.name!r} (it serves {existing.repository})")
        servers.stop(server_options.name)
    t0 = time.monotonic()
    state = servers.start(server_options)
    result.timings_s["server_start_to_ready"] = round(time.monotonic() - t0, 2)
    result.server = state.to_dict()

    t0 = time.monotonic()
    _evaluate_served(state, offline, data, result, say)
    result.timings_s["evaluate"] = round(time.monotonic() - t0, 2)

    sample = options.workdir / "digits_sample.json"
    sample.write_text(json.dumps({demo.INPUT_NAME: data.x_test[:2].tolist()}))
    result.sample_file = str(sample)
    result.timings_s["total"] = round(time.monotonic() - started, 2)
    return result


def _train_export_publish(repo: Repository, options: QuickstartOptions, data, result: QuickstartResult,
                          say: Progress) -> dict[tuple[str, int], float]:
    """Train, export and publish each run once (a run published before is reused); the offline accuracy of
    every (model, version)."""
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
        import torch

        with torch.inference_mode():  # the scores too: the monitor calibrates them to estimate accuracy without labels
            scores = model(torch.from_numpy(data.x_test)).numpy()
        np.savez(reference, features=data.x_test, predicted=demo.predict(model, data.x_test), labels=data.y_test, outputs=scores)
        for fmt, name in MODEL_NAMES.items():
            version = versions[fmt]
            if version is None:
                version = repo.publish(bundle, name, fmt, serving, metadata, ReferenceSample.read(reference)).version
                result.published.append(f"{name}:{version}")
            offline[(name, version)] = accuracy
    return offline


def _evaluate_served(state, offline: dict[tuple[str, int], float], data, result: QuickstartResult, say: Progress) -> None:
    """Held-out accuracy from Triton's own answers, for every version and both protocols."""
    for (name, version), accuracy in sorted(offline.items()):
        fmt = next(f for f, n in MODEL_NAMES.items() if n == name)
        for protocol, url in (("http", state.http_url), ("grpc", state.grpc_url)):
            served = _served_accuracy(url, protocol, name, version, data)
            result.evaluations.append(Evaluation(name, version, fmt, protocol, served, accuracy, len(data.y_test)))
            say(f"{name} v{version} over {protocol}: accuracy {served:.4f} (offline {accuracy:.4f})")


def check_server_slot(servers: LocalServers, options: ServerOptions, repository_uri: str) -> ServerState | None:
    """The quickstart's own running server (to restart), None when there is none and its ports are free.
    ConflictError for a server of that name that serves another repository or a channel, or a busy port."""
    existing = servers.running(options.name)
    if existing is not None:
        channel = existing.channel or next(
            (a.split("=", 1)[1] for a in existing.command if a.startswith("--model-config-name=")), None)
        if existing.repository != repository_uri or channel:
            serves = f"repository {existing.repository}" + (f" as a replica of channel {channel!r}" if channel else "")
            raise ConflictError(
                f"server {options.name!r} (pid {existing.pid}, http {existing.http_url}) serves {serves}; "
                f"the quickstart would have to stop it, and will not",
                hint=f"run the quickstart beside it: 'mlctl quickstart --name quickstart --http-port P --grpc-port P2 "
                     f"--metrics-port P3' with free ports, or stop it yourself with 'mlctl server stop --name {options.name}'",
            )
        return existing
    for kind, port in options.ports().items():
        if port_in_use(options.host, port):
            raise ConflictError(f"{kind} port {port} on {options.host} is in use (another server?)",
                                hint=f"pass the quickstart --{kind}-port with a free port ('mlctl server status --name NAME' shows a server's ports)")
    return None


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
