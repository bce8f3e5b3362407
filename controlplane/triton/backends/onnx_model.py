"""ONNX through onnxruntime, with the CUDA provider when the instance kind is GPU and it is available."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from controlplane.triton.backends.standin import StandInModel


class OnnxModel(StandInModel):
    default_filename = "model.onnx"

    def load(self, path: str, use_gpu: bool, device_id: int) -> None:
        import onnxruntime as ort

        providers: list = ["CPUExecutionProvider"]
        if use_gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Triton runs instances side by side (and several versions during a switch): one thread each, never
        # spinning while idle, so a loading or idle instance takes no core from those serving
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        self.providers = self.session.get_providers()
        # the ONNX exporter drops inputs the graph never reads; Triton still delivers them
        self.graph_inputs = {i.name for i in self.session.get_inputs()}

    def forward(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [s.name for s in self.outputs]
        results = self.session.run(names, {k: v for k, v in inputs.items() if k in self.graph_inputs})
        return dict(zip(names, results))
