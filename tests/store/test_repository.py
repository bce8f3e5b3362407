import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from controlplane.errors import ConflictError, NotFoundError, UsageError
from controlplane.model.bundle import ExportBundle
from controlplane.model.config import ServingOptions
from controlplane.store import open_store
from controlplane.store.repository import Repository


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "repo").mkdir()
    return Repository(open_store(str(tmp_path / "repo")))


def test_publish_numbers_versions_and_writes_manifest(repo, exports):
    first = repo.publish(exports["mlp"], "m", "onnx", ServingOptions(), {"accuracy": 0.9})
    second = repo.publish(exports["mlp"], "m", "onnx", ServingOptions())
    assert (first.version, second.version) == (1, 2)
    assert repo.versions("m") == [1, 2]
    manifest = repo.manifest("m", 1)
    assert manifest.metadata == {"accuracy": 0.9}
    assert set(manifest.files) == {"model.onnx"} and len(manifest.files["model.onnx"]["sha256"]) == 64
    assert manifest.parity["passed"] and manifest.signature == exports["mlp"].signature
    assert {"user", "host", "frameworks", "source"} <= set(manifest.provenance)
    assert manifest.provenance["frameworks"]["torch"].startswith("2.13")
    assert repo.verify("m", 1) == []
    assert repo.summary("m").format == "onnx"


def test_published_versions_are_never_rewritten(repo, exports):
    repo.publish(exports["mlp"], "m", "onnx", ServingOptions())
    path = repo.store.root / "m" / "1" / "model.onnx"
    before = (path.stat().st_mtime_ns, path.read_bytes())
    repo.publish(exports["mlp"], "m", "onnx", ServingOptions())
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    with pytest.raises(ConflictError, match="already exists"):
        repo.store.put_tree(exports["mlp"].path, "m/1")


def test_tampering_is_detected(repo, exports):
    repo.publish(exports["mlp"], "m", "onnx", ServingOptions())
    version_dir = repo.store.root / "m" / "1"
    with open(version_dir / "model.onnx", "ab") as f:
        f.write(b"\0")
    (version_dir / "extra.bin").write_bytes(b"x")
    assert repo.verify("m", 1) == ["extra.bin: not in the manifest", "model.onnx: sha256 differs from the manifest"]


def test_incompatible_versions_are_refused(repo, exports):
    repo.publish(exports["mlp"], "m", "onnx", ServingOptions())
    with pytest.raises(ConflictError, match="served as onnx"):
        repo.publish(exports["mlp"], "m", "torchscript", ServingOptions())
    with pytest.raises(ConflictError, match="signature differs"):
        repo.publish(exports["multi"], "m", "onnx", ServingOptions())
    assert repo.versions("m") == [1]


def test_missing_things_are_named(repo, tmp_path, exports):
    with pytest.raises(NotFoundError, match="does not exist"):
        Repository(open_store(str(tmp_path / "nowhere"))).model_names()
    with pytest.raises(NotFoundError, match="model 'ghost' not found"):
        repo.versions("ghost")
    repo.publish(exports["mlp"], "m", "onnx", ServingOptions())
    with pytest.raises(NotFoundError, match=r"version 7 of model 'm' not found .* \(latest is 1\)"):
        repo.manifest("m", 7)
    with pytest.raises(UsageError, match="model name"):
        repo.publish(exports["mlp"], "../escape", "onnx", ServingOptions())
    with pytest.raises(UsageError, match="has no torchscript model"):
        repo.publish(replace(exports["mlp"], formats=("onnx",)), "m", "torchscript", ServingOptions())


def test_concurrent_publishes_get_distinct_versions(repo, exports):
    results, errors = [], []

    def publish():
        try:
            results.append(repo.publish(exports["mlp"], "m", "onnx", ServingOptions()).version)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [1, 2, 3, 4]
    assert all(repo.verify("m", v) == [] for v in results)


PUBLISH_SCRIPT = """
import sys
from controlplane.model.bundle import ExportBundle
from controlplane.model.config import ServingOptions
from controlplane.store.repository import Repository
from controlplane.store import open_store
repo = Repository(open_store(sys.argv[1]))
print("go", flush=True)
repo.publish(ExportBundle.load(sys.argv[2]), "big", "onnx", ServingOptions())
"""


def test_kill_9_during_publish_leaves_only_complete_versions(repo, exports, tmp_path):
    """A publish killed at any moment leaves either no version or a complete one."""
    big = tmp_path / "big-export"
    big.mkdir()
    (big / "export.json").write_text((exports["mlp"].path / "export.json").read_text().replace('"torchscript"', '"onnx"'))
    (big / "model.onnx").write_bytes(os.urandom(48 << 20))
    ExportBundle.load(big)
    killed = 0
    for delay in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
        proc = subprocess.Popen([sys.executable, "-c", PUBLISH_SCRIPT, repo.uri, str(big)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"go"
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait(timeout=60)
        proc.stdout.close()
    assert killed >= 1
    model_dir = repo.store.root / "big"
    if model_dir.exists():
        numbered = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit())
        assert numbered == repo.versions("big")  # no version folder without its manifest
        assert all(repo.verify("big", v) == [] for v in numbered)
    # and the repository still takes a publish afterwards
    assert repo.publish(ExportBundle.load(big), "big", "onnx", ServingOptions()).version >= 1


def test_the_canary_suffix_is_reserved_and_only_a_marked_companion_is_no_model(repo, exports):
    import shutil

    from controlplane.store.repository import CANARY_MARK

    with pytest.raises(UsageError, match="reserved for canaries"):
        repo.publish(exports["mlp"], "m.canary", "onnx", ServingOptions())
    assert repo.store.list_dir("m.canary") == []
    repo.publish(exports["mlp"], "m", "onnx", ServingOptions())
    root = repo.store.root
    shutil.copytree(root / "m", root / "m.canary")  # as published before the suffix was reserved: still a model
    assert repo.model_names() == ["m", "m.canary"] and not repo.is_canary_companion("m.canary")
    (root / "m.canary" / CANARY_MARK).write_text("{}")  # what 'mlctl canary start' marks its companion with
    assert repo.model_names() == ["m"] and repo.is_canary_companion("m.canary") and not repo.is_canary_companion("m")


@pytest.mark.parametrize("fault", ["answer cut short", "transfer failed"])
def test_an_s3_transfer_that_breaks_off_is_a_clear_error_naming_where(fault):
    """An endpoint dying mid-answer can leave s3transfer without a field it reads (KeyError 'UploadId', seen once in
    the S3-killed drill of tests/release/test_faults.py) or boto3 wrapping the failure in its own error: both come
    out as mlctl errors naming the action and the key, never as a bare KeyError."""
    from boto3.exceptions import S3UploadFailedError

    from controlplane.errors import MlctlError, UnavailableError
    from controlplane.store.s3 import S3Store

    raised, expected = ((KeyError("UploadId"), UnavailableError) if fault == "answer cut short"
                        else (S3UploadFailedError("Failed to upload x: connection reset"), MlctlError))
    store = S3Store("s3://models/faults")
    with pytest.raises(expected, match=r"upload of s3://models/faults/\.mlctl/staging/mlp/2") as caught, \
            store._errors("upload", ".mlctl/staging/mlp/2"):
        raise raised
    assert caught.value.__cause__ is raised


def test_a_publish_cut_off_while_copying_into_place_is_swept_by_a_later_one(s3_env, exports, monkeypatch):
    """S3 has no rename: a publish whose endpoint died while it copied its files into place leaves some of them under
    <model>/<v>/ (no manifest, so no version, but a model file a Triton loading the latest version would load). A
    later publish removes them once the claim has said "copying" for long enough, and the number stays unused; a
    fresh claim, a finished one and one cut during the upload (nothing in place) are left alone. The endpoint's
    death mid-copy is played by the copy failing after the first file and the clean-up failing (the S3 server
    stays up for the rest); the S3-killed drill in tests/release/test_faults.py kills it for real during the upload."""
    from support import new_s3_uri

    from controlplane.errors import MlctlError, UnavailableError
    from controlplane.store.s3 import CLAIMS, STAGING

    store = open_store(new_s3_uri())
    repo = Repository(store)
    for _ in range(2):  # the first publish puts the model's folder, the next ones a version folder each
        repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
    assert store.read_bytes(f"{CLAIMS}/mlp/2").startswith(b"done")  # a whole copy marks its claim at the end

    real_copy, copies = store.client.copy, []

    def dying_copy(source, bucket, key, *args, **kwargs):
        copies.append(key)
        if len(copies) > 1:
            raise UnavailableError("S3 endpoint gone")
        return real_copy(source, bucket, key, *args, **kwargs)

    def no_clean_up(key):
        raise UnavailableError("S3 endpoint gone")

    with monkeypatch.context() as cut:
        cut.setattr(store.client, "copy", dying_copy)
        cut.setattr(store, "delete_tree", no_clean_up)
        with pytest.raises(MlctlError):
            repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
    left = store.list_files("mlp/3")
    assert left and "manifest.json" not in left and repo.versions("mlp") == [1, 2]  # files in place, no version
    assert store.read_bytes(f"{CLAIMS}/mlp/3").startswith(b"copying")
    store.write_bytes(f"{STAGING}/mlp/4/model.onnx", b"x")  # version 4: cut during its upload, as claimed then
    store.write_if(f"{CLAIMS}/mlp/4", b"pid 1\n", None)

    fresh = repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
    assert fresh.version == 5 and store.list_files("mlp/3") == left  # minutes old: it could still be copying
    store.abandoned_after_s = 0.0  # as if the claims were an hour old
    later = repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
    assert later.version == 6 and store.list_files("mlp/3") == [] and store.list_files(f"{STAGING}/mlp/3") == []
    assert store.read_bytes(f"{CLAIMS}/mlp/3").startswith(b"swept")  # taken over: a copy waking up stops
    assert store.list_files(f"{STAGING}/mlp/4") == ["model.onnx"]  # nothing of it in place: left alone
    assert repo.versions("mlp") == [1, 2, 5, 6] and {"3", "4"} <= set(store.claimed("mlp"))  # the numbers stay used
    assert all(repo.verify("mlp", v) == [] for v in (1, 2, 5, 6))
    assert store.sweep_abandoned("mlp") == []  # swept once: not again


def test_a_copy_that_a_sweep_took_over_stops_before_its_manifest(s3_env, exports, monkeypatch):
    """The race the claim's compare-and-swap settles: a sweep takes over a copy that it judged abandoned (here: any
    age counts) while that copy is in fact still going; the copy finds its claim taken before its next file and
    stops with no manifest written, and the publish goes on under the next number. No version with missing files."""
    from support import new_s3_uri

    store = open_store(new_s3_uri())
    repo = Repository(store)
    for _ in range(2):
        repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
    store.abandoned_after_s = 0.0
    real_copy, swept = store.client.copy, []

    def copy_then_sweep(source, bucket, key, *args, **kwargs):
        real_copy(source, bucket, key, *args, **kwargs)
        if not swept and key.endswith("/3/model.onnx"):  # version 3 half copied: another publisher's sweep runs
            swept.extend(store.sweep_abandoned("mlp"))

    monkeypatch.setattr(store.client, "copy", copy_then_sweep)
    manifest = repo.publish(exports["mlp"], "mlp", "onnx", ServingOptions(), {})
    assert swept == ["mlp/3"] and manifest.version == 4
    assert repo.versions("mlp") == [1, 2, 4] and store.list_files("mlp/3") == []
    assert all(repo.verify("mlp", v) == [] for v in (1, 2, 4))
