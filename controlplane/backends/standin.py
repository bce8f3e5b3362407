"""Common body of the Python-based stand-ins for Triton's `onnxruntime` and `pytorch` backends.

Triton's Python backend runs `backends/<name>/model.py`; those files subclass `StandInModel`. The real
Triton core does scheduling, dynamic batching, protocol handling and metrics; only the forward pass
is Python. Subclasses implement `load` and `forward`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import numpy as np

from controlplane.backends.batching import check_outputs, concat_batch, group_requests, split_batch
from controlplane.signature import TensorSpec, numpy_dtype_of_triton


def specs_from_config(entries: list[dict]) -> tuple[TensorSpec, ...]:
    """Specs as the model sees them: a `reshape` replaces the API dims."""
    return tuple(
        TensorSpec(
            e["name"],
            numpy_dtype_of_triton(e["data_type"]),
            tuple(int(d) for d in (e["reshape"].get("shape", []) if "reshape" in e else e.get("dims", []))),
        )
        for e in entries
    )


class StandInModel:
    default_filename = ""

    def load(self, path: str, use_gpu: bool, device_id: int) -> None:
        raise NotImplementedError

    def forward(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    # --- Triton Python-backend entry points -------------------------------------------------------
    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self._pb = pb_utils
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
        self.inputs = specs_from_config(config.get("input", []))
        self.outputs = specs_from_config(config.get("output", []))
        self.batched = int(config.get("max_batch_size", 0)) > 0
        filename = config.get("default_model_filename") or self.default_filename
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        use_gpu = args.get("model_instance_kind") == "GPU"
        self.load(path, use_gpu, int(args.get("model_instance_device_id") or 0))

    def execute(self, requests: list) -> list:
        pb = self._pb
        tensors = [
            {spec.name: pb.get_input_tensor_by_name(r, spec.name).as_numpy() for spec in self.inputs}
            for r in requests
        ]
        responses: list = [None] * len(requests)
        groups = group_requests(tensors) if self.batched else [[i] for i in range(len(requests))]
        for group in groups:
            for index, result in zip(group, self._run_group([tensors[i] for i in group])):
                if isinstance(result, str):
                    responses[index] = pb.InferenceResponse(error=pb.TritonError(result))
                else:
                    responses[index] = pb.InferenceResponse(
                        output_tensors=[pb.Tensor(name, np.ascontiguousarray(a)) for name, a in result.items()]
                    )
        return responses

    def _run_group(self, group: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | str]:
        """One forward for the whole group; a failure answers every request in it with the reason."""
        if self.batched:
            batch, sizes = concat_batch(group)
        else:
            batch, sizes = group[0], [None]
        try:
            outputs = self.forward(batch)
        except Exception as exc:  # the backend must answer, not crash: report the model's own error
            return [f"{self.model_name}: forward failed: {type(exc).__name__}: {exc}"] * len(group)
        total = sum(sizes) if self.batched else None
        problem = check_outputs(self.outputs, outputs, self.batched, total)
        if problem:
            return [f"{self.model_name}: {problem}"] * len(group)
        wanted = {s.name: outputs[s.name] for s in self.outputs}
        return split_batch(wanted, sizes) if self.batched else [wanted]

    def finalize(self) -> None:
        pass
