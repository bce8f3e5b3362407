"""Shared fixtures: isolated environment, a session repository, and a real tritonserver."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from support import MLP_INPUTS, MULTI_INPUTS, TESTS, free_port

from controlplane.export.exporter import ExportRequest, export_model
from controlplane.model.bundle import ExportBundle
from controlplane.model.config import ServingOptions, VersionPolicy
from controlplane.quality.reference import ReferenceSample
from controlplane.model.signature import parse_tensor_spec
from controlplane.store import open_store
from controlplane.store.repository import Repository
from controlplane.triton.server.local import LocalServers, ServerOptions


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("MLCTL_", "AWS_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MLCTL_HOME", str(tmp_path / "mlctl-home"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> dict[str, ExportBundle]:
    root = tmp_path_factory.mktemp("exports")
    sys.path.insert(0, str(TESTS))
    return {
        "mlp": export_model(ExportRequest("models_under_test:mlp", MLP_INPUTS, root / "mlp", ("y",))),
        "multi": export_model(ExportRequest("models_under_test:multi", MULTI_INPUTS, root / "multi", ("h", "s"))),
    }


@pytest.fixture(scope="session")
def digits_split() -> dict:
    """scikit-learn's digits, split 60/20/20: training, the reference sample, and a later stream."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    train, reference, stream = np.split(order, [int(0.6 * len(x)), int(0.8 * len(x))])
    return {"train": (x[train], y[train]), "reference": (x[reference], y[reference]), "stream": (x[stream], y[stream])}


@pytest.fixture(scope="session")
def session_repo(tmp_path_factory, exports, digits_split) -> Repository:
    """mlp / mlp_ts / multi / multi_ts, two versions of mlp, and a model whose config lies about its output."""
    root = tmp_path_factory.mktemp("repo")
    repo = Repository(open_store(str(root)))
    # a 20 ms batching window lets concurrent requests meet in one batch on a 2-core machine
    batching = ServingOptions(max_queue_delay_us=20_000, version_policy=VersionPolicy("all"))
    for name, fmt, bundle in [
        ("mlp", "onnx", exports["mlp"]),
        ("mlp_ts", "torchscript", exports["mlp"]),
        ("multi", "onnx", exports["multi"]),
        ("multi_ts", "torchscript", exports["multi"]),
    ]:
        repo.publish(bundle, name, fmt, batching, {"purpose": "tests"})
    repo.publish(exports["mlp"], "mlp", "onnx", batching, {"purpose": "second version"})
    # TorchScript: an out-of-vocabulary token makes the model itself fail (a backend failure)
    # no warm-up: its one request per load counts in Triton's counters, and the metrics tests count exactly
    repo.publish(exports["multi"], "metered", "torchscript", ServingOptions(warmup=False), {"purpose": "metrics tests only"})
    # a trained digits classifier, published with its reference sample (the drift baseline)
    import numpy as np

    from controlplane.demo import digits as demo

    (x_train, y_train), (x_ref, y_ref) = digits_split["train"], digits_split["reference"]
    model = demo.train_classifier(demo.DigitsData(x_train, y_train, x_ref, y_ref), seed=0, epochs=15)
    work = tmp_path_factory.mktemp("classifier")
    bundle = export_model(ExportRequest("controlplane.demo.digits:build_classifier (trained in tests)", (parse_tensor_spec("pixels:float32:64"),),
                                        work / "export", ("probabilities",), formats=("onnx",)), model=model)
    import torch

    with torch.inference_mode():
        scores = model(torch.from_numpy(x_ref)).numpy()
    np.savez(work / "reference.npz", features=x_ref, predicted=demo.predict(model, x_ref), labels=y_ref, outputs=scores)
    repo.publish(bundle, "classifier", "onnx", ServingOptions(), {}, ReferenceSample.read(work / "reference.npz"))
    # config says FP64 where the model returns float32: the stand-in must refuse, as native backends do
    shutil.copytree(root / "mlp", root / "liar")
    config = (root / "liar" / "config.pbtxt").read_text()
    (root / "liar" / "config.pbtxt").write_text(
        config.replace('name: "mlp"', 'name: "liar"').replace("data_type: TYPE_FP32\n  dims: 4", "data_type: TYPE_FP64\n  dims: 4")
        .split("model_warmup {")[0]  # no warm-up: it would refuse to load the liar, and its tests want a loaded liar
    )
    return repo


@pytest.fixture(scope="session")
def triton(tmp_path_factory, session_repo):
    """A real tritonserver (the nvidia-pytriton binary) serving the session repository."""
    home = tmp_path_factory.mktemp("server-home")
    servers = LocalServers(home)
    options = ServerOptions(
        repository=session_repo.uri,
        name="tests",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        timeout_s=120,
        exit_timeout_s=5,
    )
    state = servers.start(options)
    try:
        yield state
    finally:
        servers.stop("tests", grace_s=15)


# --- S3: a real S3-compatible HTTP server (moto's server mode), started once per session ----------------
# Single-threaded, so that its conditional writes are atomic as they are on S3 itself; with authentication
# on (after the first few set-up calls), so that wrong credentials are refused for real.
MOTO_LAUNCHER = (
    "import sys; from werkzeug.serving import run_simple; "
    "from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app; "
    "run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)"
)
UNAUTHENTICATED_SETUP_CALLS = 4  # create user, create policy, attach it, create the access key


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    import json

    import boto3

    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(UNAUTHENTICATED_SETUP_CALLS)}
    proc = subprocess.Popen([sys.executable, "-c", MOTO_LAUNCHER, str(port)], stdout=log, stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start")
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1")
        iam.create_user(UserName="mlctl")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        arn = iam.create_policy(PolicyName="mlctl-all", PolicyDocument=json.dumps(policy))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="mlctl", PolicyArn=arn)
        key = iam.create_access_key(UserName="mlctl")["AccessKey"]
        credentials = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key["AccessKeyId"],
                     aws_secret_access_key=key["SecretAccessKey"], region_name="us-east-1").create_bucket(Bucket="models")
        yield credentials
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """The S3 endpoint and credentials in this test's environment."""
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture(scope="session")
def prometheus(triton, tmp_path_factory):
    """A real Prometheus (Debian's) scraping the session's Triton every second."""
    import shutil

    import yaml

    from controlplane.errors import MlctlError
    from controlplane.observe.metrics import artifacts
    from controlplane.observe.metrics.report import PrometheusSource

    PROMETHEUS = shutil.which("prometheus")
    if PROMETHEUS is None:
        pytest.fail("prometheus is not installed: run scripts/test.sh, which installs Debian's package")
    work = tmp_path_factory.mktemp("prometheus")
    config = artifacts.prometheus_config([f"127.0.0.1:{triton.metrics_port}"], [], [str(TESTS.parents[1] / "deploy/prometheus/rules/mlctl-alerts.yml")], "1s")
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(work / "prometheus.log", "wb")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        source = PrometheusSource(url)
        deadline = time.monotonic() + 60
        while True:
            try:
                if source.scalar('up{job="triton"}') == 1:
                    break
            except MlctlError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"prometheus did not scrape Triton; see {work / 'prometheus.log'}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
