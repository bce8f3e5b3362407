"""The Triton Python-backend model that runs one pipeline step (copied as `<step>/<version>/model.py`).

It depends only on numpy and Triton's `triton_python_backend_utils`, so the NGC image's Python backend runs the
same file as the wheel's. The user's code is `step.py` beside it, with this contract:

    INPUTS = ["image:uint8:64"]            # name:dtype:dims per sample, as `mlctl export --input`
    OUTPUTS = ["pixels:float32:64"]
    def process(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:   # arrays carry the batch first
"""

import importlib.util
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = os.path.join(args["model_repository"], args["model_version"], "step.py")
        spec = importlib.util.spec_from_file_location(f"mlctl_step_{config['name']}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.process = module.process
        self.input_names = [i["name"] for i in config["input"]]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                arrays = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
                result = self.process(arrays)
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(np.asarray(result[n]).astype(t))) for n, t in self.outputs]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # noqa: BLE001 - one request's failure is its own answer, never the others'
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"pipeline step failed: {exc!r}")))
        return responses
