"""Common body of the Python-based stand-ins for Triton's `onnxruntime` and `pytorch` backends.

Triton's Python backend runs `backends/<name>/model.py`; those files subclass `StandInModel`. The real
Triton core does scheduling, dynamic batching, protocol handling and metrics; only the forward pass
is Python. Subclasses implement `load` and `forward`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import numpy as np

from controlplane.model.signature import TensorSpec, numpy_dtype_of_triton
from controlplane.triton.backends.batching import (
    check_outputs,
    concat_batch,
    group_requests,
    split_batch,
)

LATENCY_BUCKETS_S = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]


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
        # Triton 2.51 exports latency only as per-replica summaries; a histogram aggregates across replicas.
        # The family is kept on self: metrics vanish when it is garbage-collected.
        self._latency_family = pb_utils.MetricFamily(
            name="mlctl_execute_duration_seconds",
            description="Forward-pass time seen by each request, from the mlctl stand-in backend",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        labels = {"model": self.model_name, "version": str(args["model_version"])}
        self._latency = self._latency_family.Metric(labels=labels, buckets=LATENCY_BUCKETS_S)

    def execute(self, requests: list) -> list:
        pb = self._pb
        tensors = [
            {spec.name: pb.get_input_tensor_by_name(r, spec.name).as_numpy() for spec in self.inputs}
            for r in requests
        ]
        responses: list = [None] * len(requests)
        groups = group_requests(tensors) if self.batched else [[i] for i in range(len(requests))]
        for group in groups:
            started = time.perf_counter()
            results = self._run_group([tensors[i] for i in group])
            elapsed = time.perf_counter() - started
            for _ in group:
                self._latency.observe(elapsed)
            for index, result in zip(group, results):
                if isinstance(result, str):
                    responses[index] = pb.InferenceResponse(error=pb.TritonError(result))
                else:
                    responses[index] = pb.InferenceResponse(
                        output_tensors=[pb.Tensor(name, np.ascontiguousarray(a)) for name, a in result.items()]
                    )
        failed = [r for r in responses if r.has_error()]
        if failed and len(failed) == len(responses):
            # Triton's statistics count a request as failed only when execute itself fails; error
            # responses alone are counted as successes. Every request failed here: say so the counted way.
            raise pb.TritonModelException(failed[0].error().message())
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
            if len(group) > 1:  # one bad request must not fail the others batched with it
                return [result for request in group for result in self._run_group([request])]
            return [f"{self.model_name}: forward failed: {type(exc).__name__}: {exc}"]
        total = sum(sizes) if self.batched else None
        problem = check_outputs(self.outputs, outputs, self.batched, total)
        if problem:
            return [f"{self.model_name}: {problem}"] * len(group)
        wanted = {s.name: outputs[s.name] for s in self.outputs}
        return split_batch(wanted, sizes) if self.batched else [wanted]

    def finalize(self) -> None:
        pass
