"""The digits pipeline end to end: raw 8x8 pixel bytes -> normalise.py -> the digits model -> top_label.py -> the digit.

Trains the digits classifier for a few seconds, exports and publishes it, publishes the pipeline around it with a
reference of raw test pixels (for `mlctl monitor` and `mlctl gate`), serves it on a local Triton and sends it raw
bytes; then sends them again through `mlctl gateway serve`, each answer's true digit back as a feedback label, and
reads the monitor's accuracy from those labels (the digit the post step answers is the logged class). Run from
the repository root:

    .venv/bin/python examples/digits_pipeline/end_to_end.py [WORKDIR]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from controlplane.demo.digits import load_digits_split, predict, train_classifier
from controlplane.export.exporter import ExportRequest, export_model
from controlplane.model.config import ServingOptions
from controlplane.model.signature import parse_tensor_spec
from controlplane.quality.monitor import MonitorOptions, load_report
from controlplane.quality.reference import ReferenceSample
from controlplane.readiness import free_port, wait_until
from controlplane.release.pipeline import switch_pipeline
from controlplane.store import open_store
from controlplane.store.pipelines import publish_pipeline
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.replicas import Replica
from controlplane.triton.server.local import LocalServers, ServerOptions

HERE = Path(__file__).resolve().parent
KEY = "example-admin-key"  # the gateway's admin key: predict and feedback


def post(url: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "X-API-Key": KEY})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def through_gateway(grpc_url: str, repo: Repository, log: Path, raw: np.ndarray, labels: np.ndarray) -> dict:
    """Raw bytes through `mlctl gateway serve` (JSON), each answer's true digit sent back as feedback; the monitor
    report of the pipeline's log (what `mlctl monitor report digits_pipeline --log LOG` prints) for v1."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    gateway = subprocess.Popen([str(Path(sys.executable).with_name("mlctl")), "gateway", "serve", "--port", str(port),
                                "--triton-url", grpc_url, "--log", str(log)], env={**os.environ, "MLCTL_GATEWAY_ADMIN_KEYS": KEY})
    try:
        wait_until(lambda: _healthy(url), 30, f"the gateway on {url}", give_up=lambda: gateway.poll() is not None and "it exited")
        for start in range(0, len(raw), 8):
            answer = post(f"{url}/v1/models/digits_pipeline/predict", {"inputs": {"pixels_raw": raw[start:start + 8].tolist()}})
            post(f"{url}/v1/feedback", {"feedback": [{"prediction_id": p["prediction_id"], "label": int(y)}
                                                     for p, y in zip(answer["predictions"], labels[start:start + 8])]})
    finally:
        gateway.send_signal(signal.SIGTERM)  # a clean stop flushes the log
        gateway.wait(timeout=30)
    return load_report(repo, open_store(str(log)), MonitorOptions("digits_pipeline"))["versions"]["1"]


def _healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200
    except OSError:
        return False


def main(work: Path) -> float:
    data = load_digits_split()
    model = train_classifier(data, seed=0, epochs=30)
    bundle = export_model(ExportRequest("digits classifier", (parse_tensor_spec("pixels:float32:64"),), work / "export",
                                        ("probabilities",), formats=("onnx",)), model=model)
    (work / "repo").mkdir(parents=True, exist_ok=True)
    repo = Repository(open_store(str(work / "repo")))
    repo.publish(bundle, "digits", "onnx", ServingOptions(), {})
    raw = np.rint(data.x_test * 16).astype(np.uint8)  # what a camera or a form would send: intensities 0..16 as bytes
    np.savez(work / "reference.npz", features=raw, predicted=predict(model, data.x_test), labels=data.y_test)
    manifest = publish_pipeline(repo, "digits_pipeline", "digits", 1, HERE / "normalise.py", HERE / "top_label.py",
                                reference=ReferenceSample.read(work / "reference.npz"))
    print(f"published digits_pipeline v{manifest.version}: {[s.name for s in manifest.signature.inputs]} -> "
          f"{[s.name for s in manifest.signature.outputs]}")
    servers = LocalServers(work / "home")
    state = servers.start(ServerOptions(repository=repo.uri, name="digits-pipeline", models=(), http_port=free_port(),
                                        grpc_port=free_port(), metrics_port=free_port(), timeout_s=120))
    try:
        replica = Replica(state.grpc_url)
        try:
            switch_pipeline(repo, "digits_pipeline", manifest.version, [replica])
        finally:
            replica.close()
        with TritonClient(state.grpc_url) as client:
            digits = []
            for start in range(0, len(raw), 8):  # the model's max batch size
                answer = client.infer("digits_pipeline", {"pixels_raw": raw[start:start + 8]})
                digits.append(answer.outputs["digit"].reshape(-1))
                if start == 0:
                    print(f"raw bytes {raw[0][:8].tolist()}... -> digit {int(answer.outputs['digit'][0, 0])} "
                          f"(probability {float(answer.outputs['confidence'][0, 0]):.2f}), label {int(data.y_test[0])}")
        accuracy = float((np.concatenate(digits) == data.y_test).mean())
        print(f"{len(raw)} test digits as raw bytes through the pipeline: accuracy {accuracy:.3f}")
        report = through_gateway(state.grpc_url, repo, work / "log", raw, data.y_test)
        print(f"the same through the gateway, each answer's true digit sent as feedback: accuracy "
              f"{report['quality']['accuracy']:.3f} over {report['labelled']} labels "
              f"(mlctl -r {repo.uri} monitor report digits_pipeline --log {work / 'log'})")
        return accuracy
    finally:
        servers.stop("digits-pipeline", grace_s=15)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="digits-pipeline-")))
