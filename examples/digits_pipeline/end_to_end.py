"""The digits pipeline end to end: raw 8x8 pixel bytes -> normalise.py -> the digits model -> top_label.py -> the digit.

Trains the digits classifier for a few seconds, exports and publishes it, publishes the pipeline around it with a
reference of raw test pixels (for `mlctl monitor` and `mlctl gate`), serves it on a local Triton and sends it raw
bytes. Run from the repository root:

    .venv/bin/python examples/digits_pipeline/end_to_end.py [WORKDIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from controlplane.demo.digits import load_digits_split, predict, train_classifier
from controlplane.export.exporter import ExportRequest, export_model
from controlplane.model.config import ServingOptions
from controlplane.model.signature import parse_tensor_spec
from controlplane.quality.reference import ReferenceSample
from controlplane.readiness import free_port
from controlplane.release.pipeline import switch_pipeline
from controlplane.store import open_store
from controlplane.store.pipelines import publish_pipeline
from controlplane.store.repository import Repository
from controlplane.triton.client import TritonClient
from controlplane.triton.replicas import Replica
from controlplane.triton.server.local import LocalServers, ServerOptions

HERE = Path(__file__).resolve().parent


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
        return accuracy
    finally:
        servers.stop("digits-pipeline", grace_s=15)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="digits-pipeline-")))
