import pytest

from controlplane.errors import UsageError
from controlplane.model import config as mc
from controlplane.model.signature import Signature, TensorSpec

SIG = Signature(
    inputs=(TensorSpec("tokens", "int64", (-1,)), TensorSpec("mask", "bool", (2,))),
    outputs=(TensorSpec("h", "float32", (2,)), TensorSpec("s", "float32", ())),
    max_batch_size=16,
)


def test_config_round_trip_through_pbtxt():
    options = mc.ServingOptions(max_queue_delay_us=700, instance_count=2, instance_kind="gpu",
                                version_policy=mc.VersionPolicy.parse("specific:2,1"))
    config = mc.build_config("multi", "onnx", SIG, options)
    text = mc.to_pbtxt(config)
    parsed = mc.parse_pbtxt(text)
    assert parsed == config
    assert parsed.platform == "onnxruntime_onnx"
    assert parsed.max_batch_size == 16
    assert list(parsed.input[0].dims) == [-1]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 700
    assert parsed.instance_group[0].count == 2
    assert mc._pb().ModelInstanceGroup.Kind.Name(parsed.instance_group[0].kind) == "KIND_GPU"
    assert list(parsed.version_policy.specific.versions) == [1, 2]
    # the per-sample scalar output is dims [1] reshaped to [] (Triton wants non-empty dims when batching)
    assert list(parsed.output[1].dims) == [1] and parsed.output[1].HasField("reshape")
    assert mc.signature_of(parsed) == SIG
    assert mc.signature_of(parsed, api=True).outputs[1].dims == (1,)
    assert mc.format_of(parsed) == "onnx"


def test_torchscript_and_unbatched_config():
    sig = Signature((TensorSpec("x", "float32", (3,)),), (TensorSpec("y", "float32", (3,)),), 0)
    config = mc.build_config("m", "torchscript", sig, mc.ServingOptions())
    assert config.platform == "pytorch_libtorch"
    assert config.default_model_filename == "model.pt"
    assert not config.HasField("dynamic_batching")  # no batch dimension, nothing to batch
    assert mc.version_policy_of(config) == mc.VersionPolicy("latest", (1,))


def test_json_form_for_load_override():
    import json

    data = json.loads(mc.to_json(mc.build_config("m", "onnx", SIG, mc.ServingOptions())))
    assert data["name"] == "m" and data["input"][0]["data_type"] == "TYPE_INT64"


@pytest.mark.parametrize("text", ["latest", "latest:0", "specific:", "newest:1", "specific:a"])
def test_version_policy_rejects(text):
    with pytest.raises(UsageError, match="version policy"):
        mc.VersionPolicy.parse(text)


def test_invalid_pbtxt_is_a_clear_error():
    with pytest.raises(UsageError, match="not a valid Triton model config"):
        mc.parse_pbtxt("name: [", "repo/m/config.pbtxt")


def test_reference_warmup_uses_the_first_row_only_when_it_fits_the_one_input():
    import numpy as np

    one = Signature(inputs=(TensorSpec("x", "float32", (2, 3)),), outputs=(TensorSpec("y", "float32", (2,)),), max_batch_size=8)
    config = mc.build_config("m", "onnx", one, mc.ServingOptions())
    rows = np.arange(12, dtype=np.float64).reshape(2, 6)
    assert mc.reference_warmup_data(config, rows) == {"x": np.arange(6, dtype=np.float32).tobytes()}  # cast to the input's type
    assert mc.reference_warmup_data(config, rows[:, :5]) == {}  # not the input's size: the warm-up stays random
    two = Signature(inputs=(TensorSpec("a", "float32", (6,)), TensorSpec("b", "int64", (1,))), outputs=one.outputs, max_batch_size=8)
    assert mc.reference_warmup_data(mc.build_config("m", "onnx", two, mc.ServingOptions()), rows) == {}
    mc.use_warmup_files(config, {"x": "3/x"})
    assert config.model_warmup[0].inputs["x"].input_data_file == "3/x" and not config.model_warmup[0].inputs["x"].random_data
