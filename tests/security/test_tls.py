"""TLS against a real tritonserver with mutual TLS on gRPC (certificates made here), and the gateway over HTTPS:
the CLI promotes and infers over TLS, a plain-text or certificate-less client is refused with a clear message."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
from certs import make_pki
from support import (
    ADMIN_KEY,
    MLCTL,
    PREDICT_KEY,
    TESTS,
    free_port,
    run_mlctl,
    wait_until,
)

from controlplane.errors import NotFoundError, UnavailableError, UsageError
from controlplane.model.config import ServingOptions
from controlplane.store import open_store
from controlplane.store.channel_store import ChannelStore
from controlplane.store.repository import Repository
from controlplane.triton import tls
from controlplane.triton.client import TritonClient
from controlplane.triton.server.local import LocalServers, ServerOptions
from controlplane.triton.tls import ClientTls, ServerTls

pytestmark = pytest.mark.e2e
MODEL = "secure"


@pytest.fixture(scope="module")
def stage(tmp_path_factory, exports):
    """One replica of channel production serving gRPC with mutual TLS; `secure` v1 promoted over TLS, v2 published."""
    work = tmp_path_factory.mktemp("tls")
    pki = make_pki(work / "pki")
    (work / "repo").mkdir()
    repo = Repository(open_store(str(work / "repo")))
    for _ in range(2):
        repo.publish(exports["mlp"], MODEL, "onnx", ServingOptions())
    servers = LocalServers(work / "home")
    options = ServerOptions(repository=str(work / "repo"), name="tls", channel="production", http_port=free_port(),
                            grpc_port=free_port(), metrics_port=free_port(), exit_timeout_s=3,
                            tls=ServerTls.create(str(pki.server_cert), str(pki.server_key), str(pki.ca)))
    state = servers.start(options)
    np.save(work / "x.npy", np.zeros((1, 8), np.float32))
    env = {"MLCTL_REPOSITORY": str(work / "repo"), "MLCTL_TARGETS_PRODUCTION": state.grpc_url, "MLCTL_TRITON_URL": state.grpc_url}
    tls = {"MLCTL_TLS_CA": str(pki.ca), "MLCTL_TLS_CLIENT_CERT": str(pki.client_cert), "MLCTL_TLS_CLIENT_KEY": str(pki.client_key)}
    try:
        promoted = run_mlctl("promote", MODEL, "1", "--to", "production", env={**env, **tls})
        yield {"pki": pki, "state": state, "env": env, "tls": tls, "input": str(work / "x.npy"), "promoted": promoted,
               "work": work}
    finally:
        servers.stop("tls", grace_s=10)


def test_promote_and_infer_work_over_mutual_tls(stage):
    assert stage["promoted"].returncode == 0, stage["promoted"].stderr
    result = run_mlctl("infer", MODEL, "--input", stage["input"], "--json", env={**stage["env"], **stage["tls"]})
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert str(answer["version"]) == "1" and np.asarray(answer["outputs"]["y"]).shape == (1, 4)


@pytest.fixture
def client_tls():
    """Put a client TLS in effect in this process for one test (as the CLI does from MLCTL_TLS_*)."""
    yield tls.use
    tls.use(None)


def test_a_plain_text_client_fails_clearly(stage):
    result = run_mlctl("infer", MODEL, "--input", stage["input"], env=stage["env"])
    assert result.returncode == 5 and result.stdout == ""
    assert stage["state"].grpc_url in result.stderr and "MLCTL_TLS_CA" in result.stderr


def test_mutual_tls_refuses_a_client_without_a_certificate(stage, client_tls):
    ca_only = {"MLCTL_TLS_CA": stage["tls"]["MLCTL_TLS_CA"]}
    promote = run_mlctl("promote", MODEL, "2", "--to", "production", env={**stage["env"], **ca_only})
    assert promote.returncode == 5 and "nothing was changed" in promote.stderr and "MLCTL_TLS_CLIENT_CERT" in promote.stderr
    state, _ = ChannelStore(open_store(stage["env"]["MLCTL_REPOSITORY"])).load(MODEL)
    assert state.channels["production"] == 1
    client_tls(ClientTls.create(str(stage["pki"].ca), None, None))
    with pytest.raises(UnavailableError, match="MLCTL_TLS_CLIENT_CERT") as refused, TritonClient(stage["state"].grpc_url) as client:
        client.infer(MODEL, {"x": np.zeros((1, 8), np.float32)})
    assert stage["state"].grpc_url in str(refused.value)


def test_a_server_certificate_from_an_untrusted_ca_is_refused(stage, client_tls):
    pki = stage["pki"]
    client_tls(ClientTls.create(str(pki.other_ca), str(pki.client_cert), str(pki.client_key)))
    with pytest.raises(UnavailableError, match="MLCTL_TLS_CA"), TritonClient(stage["state"].grpc_url) as client:
        client.infer(MODEL, {"x": np.zeros((1, 8), np.float32)})


def test_half_a_client_pair_or_a_missing_file_is_bad_input(stage, tmp_path):
    with pytest.raises(UsageError, match="MLCTL_TLS_CLIENT_KEY"):
        ClientTls.create(str(stage["pki"].ca), str(stage["pki"].client_cert), None)
    with pytest.raises(NotFoundError, match="TLS CA"):
        ClientTls.create(str(tmp_path / "absent.pem"), None, None)
    with pytest.raises(UsageError, match="--tls-key"):
        ServerTls.create(str(stage["pki"].server_cert), None, None)


def test_the_gateway_serves_https_and_reaches_triton_over_tls(stage):
    pki, port = stage["pki"], free_port()
    env = {**os.environ, **stage["env"], **stage["tls"], "MLCTL_GATEWAY_PREDICT_KEYS": PREDICT_KEY,
           "MLCTL_GATEWAY_ADMIN_KEYS": ADMIN_KEY, "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen([MLCTL, "gateway", "serve", "--port", str(port), "--triton-url", stage["state"].grpc_url,
                             "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)], env=env)
    # meanwhile: a gateway told to infer over Triton's HTTP (plain text only) under TLS refuses to start
    refused = subprocess.Popen([MLCTL, "gateway", "serve", "--triton-http-url", "127.0.0.1:1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url, context = f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(pki.ca))

    def get(path: str, data: bytes | None = None, ctx=context) -> tuple[int, bytes]:
        request = urllib.request.Request(url + path, data=data, headers={"X-API-Key": PREDICT_KEY, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10, context=ctx) as response:
            return response.status, response.read()

    def ready() -> bool:
        try:
            return get("/readyz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(ready, 30, f"gateway on {url}", give_up=lambda: proc.poll() is not None and "it exited")
        status, body = get(f"/v1/models/{MODEL}/predict", json.dumps({"inputs": {"x": [[0.0] * 8]}}).encode())
        assert status == 200 and json.loads(body)["version"] == "1"
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # a client that does not trust it
            get("/healthz", ctx=ssl.create_default_context(cafile=str(pki.other_ca)))
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on the HTTPS port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert refused.wait(timeout=60) == 2 and "gRPC only" in refused.communicate()[1]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
