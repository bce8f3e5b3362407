"""The demo classifier's versions in either format: the GPU drills publish TorchScript (no onnxruntime there)."""

from controlplane.demo import digits as demo
from controlplane.model.config import ServingOptions
from controlplane.store import open_store
from controlplane.store.repository import Repository


def test_torchscript_versions_for_gpu_instances(tmp_path):
    (tmp_path / "repo").mkdir()
    repo = Repository(open_store(str(tmp_path / "repo")))
    versions = demo.publish_demo_versions(repo, "digits", (0, 1), tmp_path / "exports", ServingOptions(instance_kind="gpu"),
                                          fmt="torchscript")
    assert versions == [1, 2]
    config = repo.config("digits")
    assert config.platform == "pytorch_libtorch"
    assert [g.kind for g in config.instance_group] == [config.instance_group[0].KIND_GPU]
    manifest = repo.manifest("digits", 2)
    assert manifest.format == "torchscript" and list(manifest.files) == ["model.pt"]
    assert manifest.metadata == {"seed": 1}
