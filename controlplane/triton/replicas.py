"""Control of one Triton replica over gRPC: what it serves, load with a config override, a probe request.

Control calls go over gRPC (an HTTP load stalls HTTP inference while it runs). When the server restricts
its model-repository API, the key travels in the `triton-grpc-protocol-<header>` metadata.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from controlplane.defaults import CONTROL_CALL_TIMEOUT_S, HEALTH_TIMEOUT_S
from controlplane.errors import ControlKeyError, ServerError, UnavailableError
from controlplane.model.signature import Signature, wire_type
from controlplane.triton import tls
from controlplane.triton.failures import Failure, classify

CONTROL_HEADER = "mlctl-control-key"  # the <key> of --grpc-restricted-protocol=model-repository:<key>=<value>


class Replica:
    def __init__(self, url: str, control_key: str | None = None, timeout_s: float = CONTROL_CALL_TIMEOUT_S) -> None:
        import tritonclient.grpc as grpcclient

        self.url, self.timeout_s = url, timeout_s
        # every call has a deadline: a hung replica (stopped, partitioned) fails the call instead of holding it
        self.query_timeout_s = min(timeout_s, HEALTH_TIMEOUT_S)
        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url, **tls.grpc_kwargs(url))
        self._headers = {f"triton-grpc-protocol-{CONTROL_HEADER}": control_key} if control_key else None

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _errors(self, action: str):
        from tritonclient.utils import InferenceServerException

        try:
            yield
        except InferenceServerException as exc:
            failure = classify(exc)
            if failure.kind is Failure.DENIED and self._headers is None:
                raise ControlKeyError(
                    f"replica {self.url} refused {action}: its model-repository API needs the control key and none was given",
                    key_given=False, hint="set MLCTL_CONTROL_KEY or MLCTL_CONTROL_KEY_FILE",
                ) from exc
            if failure.kind is Failure.DENIED:
                raise ControlKeyError(
                    f"replica {self.url} refused {action}: it does not accept the control key given (wrong key)",
                    key_given=True, hint="check that MLCTL_CONTROL_KEY / MLCTL_CONTROL_KEY_FILE holds the key the server was started with",
                ) from exc
            if failure.kind is Failure.UNREACHABLE:
                raise UnavailableError(f"replica {self.url} is not reachable ({action}): {failure.message}",
                                       hint=tls.unreachable_hint(self.url)) from exc
            raise ServerError(f"replica {self.url}: {action} failed: {failure.message}") from exc

    def live(self) -> bool:
        with self._errors("health check"):
            return self._client.is_server_live(client_timeout=self.query_timeout_s)

    def ready(self) -> bool:
        with self._errors("readiness check"):
            return self._client.is_server_ready(client_timeout=self.query_timeout_s)

    def index(self, timeout_s: float | None = None) -> list[dict]:
        with self._errors("repository index"):
            return self._client.get_model_repository_index(headers=self._headers, as_json=True,
                                                           client_timeout=timeout_s or self.timeout_s).get("models", [])

    def served(self, model: str) -> set[int]:
        """Versions of `model` this replica has READY."""
        return {int(m["version"]) for m in self.index() if m.get("name") == model and m.get("state") == "READY"}

    def wait_settled(self, model: str, timeout_s: float = 120.0) -> None:
        """Until no version of `model` is loading or unloading here. A load sent by a client that has since
        died still runs to its end on the server: look only once it is over."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = {m.get("state") for m in self.index() if m.get("name") == model}
            if not states & {"LOADING", "UNLOADING"}:
                return
            time.sleep(0.05)
        raise ServerError(f"replica {self.url}: {model!r} still loading or unloading after {timeout_s:.0f} s")

    def load(self, model: str, config_json: str | None = None) -> None:
        """Load (or reload with a new version policy) in place: the old version serves until the new is ready."""
        with self._errors(f"load of {model!r}"):
            self._client.load_model(model, headers=self._headers, config=config_json, client_timeout=self.timeout_s)

    def answered(self, model: str) -> dict[int, int]:
        """Requests each loaded version of `model` has executed here so far (succeeded or failed)."""
        with self._errors(f"statistics of {model!r}"):
            stats = self._client.get_inference_statistics(model, headers=self._headers, as_json=True,
                                                          client_timeout=self.query_timeout_s)
        counts = {}
        for entry in stats.get("model_stats", []):
            inference = entry.get("inference_stats", {})
            counts[int(entry["version"])] = sum(int(inference.get(k, {}).get("count", 0)) for k in ("success", "fail"))
        return counts

    def unload(self, model: str) -> None:
        with self._errors(f"unload of {model!r}"):
            self._client.unload_model(model, headers=self._headers, client_timeout=self.timeout_s)

    def probe(self, model: str, signature: Signature) -> str:
        """One unversioned request of zeros; returns the version that answered."""
        grpc = self._grpc
        inputs = []
        for spec in signature.inputs:
            shape = ([1] if signature.batched else []) + [1 if d == -1 else d for d in spec.dims]
            tensor = grpc.InferInput(spec.name, shape, wire_type(spec.dtype))
            tensor.set_data_from_numpy(np.zeros(shape, dtype=spec.dtype))
            inputs.append(tensor)
        with self._errors(f"probe request to {model!r}"):
            response = self._client.infer(model, inputs, client_timeout=self.query_timeout_s)
        return str(response.get_response(as_json=True).get("model_version", ""))

    def wait_serving(self, model: str, version: int, signature: Signature, timeout_s: float = 60.0) -> None:
        """Until only `version` is READY and an unversioned request is answered by it."""
        deadline = time.monotonic() + timeout_s
        served: set[int] = set()
        while time.monotonic() < deadline:
            served = self.served(model)
            if served == {version} and self.probe(model, signature) == str(version):
                return
            time.sleep(0.02)
        raise ServerError(f"replica {self.url} did not settle on version {version} of {model!r} (serving {sorted(served)})")


def open_replicas(urls: tuple[str, ...], control_key: str | None, timeout_s: float = CONTROL_CALL_TIMEOUT_S) -> list[Replica]:
    """Clients for every replica, after checking each is reachable and accepts our control key:
    a bad target is found before anything changes."""
    replicas = [Replica(u, control_key, timeout_s) for u in urls]
    unreachable = []
    try:
        for replica in replicas:
            try:  # one call shows both: the replica answers, and its model-repository API takes our key
                replica.index(replica.query_timeout_s)
            except UnavailableError:
                unreachable.append(replica.url)
        if unreachable:
            raise UnavailableError(f"replica(s) {', '.join(unreachable)} not reachable; nothing was changed",
                                   hint=tls.unreachable_hint(unreachable[0]))
    except BaseException:
        for replica in replicas:
            replica.close()
        raise
    return replicas
