"""A small Triton client over gRPC or HTTP (tritonclient), with errors mapped to the mlctl tree."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from controlplane.errors import MlctlError, NotFoundError, UnavailableError, UsageError
from controlplane.model import config as model_config
from controlplane.model.signature import wire_type
from controlplane.triton import tls
from controlplane.triton.failures import Failure, classify

PROTOCOLS = ("grpc", "http")


@dataclass(frozen=True)
class InferResult:
    model: str
    version: str
    outputs: dict[str, np.ndarray]
    latency_ms: float
    protocol: str

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "version": self.version,
            "protocol": self.protocol,
            "latency_ms": round(self.latency_ms, 3),
            "outputs": {k: v.tolist() for k, v in self.outputs.items()},
        }


class TritonClient:
    def __init__(self, url: str, protocol: str = "grpc", timeout_s: float = 30.0) -> None:
        if protocol not in PROTOCOLS:
            raise UsageError(f"protocol {protocol!r} must be one of {', '.join(PROTOCOLS)}")
        self.url, self.protocol, self.timeout_s = url, protocol, timeout_s
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self._module = module
        with self._errors("connect"):
            self._client = (
                module.InferenceServerClient(url, **tls.grpc_kwargs(url))
                if protocol == "grpc"
                else module.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
            )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    @contextmanager
    def _errors(self, action: str, model: str | None = None):
        from tritonclient.utils import InferenceServerException

        where = f"Triton at {self.url} ({self.protocol})"
        try:
            yield
        except InferenceServerException as exc:
            failure = classify(exc)
            message = failure.message
            if failure.kind is Failure.UNREACHABLE:
                raise UnavailableError(f"{where} is not reachable: {message}", hint=self._unreachable_hint()) from exc
            if model and failure.kind is Failure.NOT_FOUND:
                raise NotFoundError(f"{action} {model!r} on {where}: {message}", hint="check 'mlctl model versions' and what the server loaded") from exc
            if failure.kind is Failure.BAD_REQUEST:
                raise UsageError(f"{action} {model!r} on {where}: {message}") from exc
            if failure.kind is Failure.DENIED:
                raise UsageError(f"{action} {model or ''} on {where} was refused: {message}", hint="set MLCTL_CONTROL_KEY or MLCTL_CONTROL_KEY_FILE") from exc
            raise MlctlError(f"{action} {model or ''} on {where} failed: {message}") from exc
        except (ConnectionError, OSError) as exc:
            raise UnavailableError(f"{where} is not reachable: {exc}", hint=self._unreachable_hint()) from exc

    def _unreachable_hint(self) -> str:
        return tls.unreachable_hint(self.url) if self.protocol == "grpc" else "is the server running? try 'mlctl server status'"

    def model_config(self, name: str, version: str = ""):
        with self._errors("model config of", name):
            if self.protocol == "grpc":
                return self._client.get_model_config(name, version, client_timeout=self.timeout_s).config
            from google.protobuf import json_format

            data = self._client.get_model_config(name, version)
            return json_format.ParseDict(data, model_config._pb().ModelConfig(), ignore_unknown_fields=True)

    def infer(self, name: str, inputs: dict[str, np.ndarray], version: str = "", outputs: list[str] | None = None) -> InferResult:
        module = self._module
        tensors = []
        for tensor_name, array in inputs.items():
            tensor = module.InferInput(tensor_name, list(array.shape), wire_type(str(array.dtype)))
            if self.protocol == "http":
                tensor.set_data_from_numpy(array, binary_data=True)
            else:
                tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        requested = [module.InferRequestedOutput(n) for n in outputs] if outputs else None
        start = time.perf_counter()
        with self._errors("inference on", name):
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            response = self._client.infer(name, tensors, model_version=str(version or ""), outputs=requested, **kwargs)
        latency_ms = (time.perf_counter() - start) * 1000
        raw = response.get_response(as_json=True) if self.protocol == "grpc" else response.get_response()
        names = [o["name"] for o in raw.get("outputs", [])]
        return InferResult(
            model=name,
            version=str(raw.get("model_version", "")),
            outputs={n: response.as_numpy(n) for n in names},
            latency_ms=latency_ms,
            protocol=self.protocol,
        )


def infer_file(client: TritonClient, model: str, path: str, version: str = "") -> InferResult:
    """Load inputs from a file, check them against the served config, and run one inference."""
    from controlplane.model.tensor_io import load_inputs

    config = client.model_config(model, version)
    signature = model_config.signature_of(config, api=True)
    arrays = load_inputs(path, signature.inputs, signature.max_batch_size)
    return client.infer(model, arrays, version)
