import json

import numpy as np
import onnx
import pytest
import torch
from support import MLP_INPUTS, MULTI_INPUTS

from controlplane.errors import CheckFailedError, ConflictError, UsageError
from controlplane.export.exporter import ExportRequest, export_model
from controlplane.model.bundle import ExportBundle
from controlplane.model.signature import parse_tensor_spec


def test_export_writes_both_formats_with_parity(exports):
    bundle = exports["mlp"]
    assert set(bundle.formats) == {"onnx", "torchscript"}
    for fmt in bundle.formats:
        assert bundle.parity[fmt]["passed"] and bundle.parity[fmt]["max_abs_error"] < 1e-5
    assert ExportBundle.load(bundle.path).signature == bundle.signature
    # the ONNX graph has a dynamic batch axis
    graph = onnx.load(str(bundle.path / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_multi_io_int64_and_bool(exports):
    sig = exports["multi"].signature
    assert [(s.name, s.dtype, s.dims) for s in sig.inputs] == [("tokens", "int64", (-1,)), ("feats", "float32", (5,)), ("mask", "bool", (2,))]
    assert [(s.name, s.dims) for s in sig.outputs] == [("h", (2,)), ("s", ())]
    assert all(r["passed"] for r in exports["multi"].parity.values())
    # random inputs covered the variable dim at two lengths and several batch sizes
    assert exports["multi"].parity["onnx"]["samples"] >= 4


def test_broken_model_fails_parity_and_writes_nothing(tmp_path):
    out = tmp_path / "broken"
    with pytest.raises(CheckFailedError, match="parity check failed") as info:
        export_model(ExportRequest("models_under_test:broken", (parse_tensor_spec("x:float32:3"),), out))
    assert info.value.exit_code == 6
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no staging left behind either


def test_user_samples_join_the_parity_check(tmp_path):
    np.save(tmp_path / "s.npy", np.full((2, 8), 3.0, np.float32))
    bundle = export_model(ExportRequest("models_under_test:mlp", MLP_INPUTS, tmp_path / "e", samples=(tmp_path / "s.npy",)))
    assert bundle.parity["onnx"]["samples"] == 3


def test_saved_torchscript_file_as_source(tmp_path):
    from models_under_test import mlp

    torch.jit.trace(mlp(), torch.zeros(1, 8)).save(str(tmp_path / "m.pt"))
    bundle = export_model(ExportRequest(str(tmp_path / "m.pt"), MLP_INPUTS, tmp_path / "e", formats=("onnx",)))
    assert bundle.formats == ("onnx",) and bundle.parity["onnx"]["passed"]


@pytest.mark.parametrize(
    "source, inputs, message",
    [
        ("no_such_module:build", MLP_INPUTS, "module 'no_such_module' not found"),
        ("models_under_test:nope", MLP_INPUTS, "has no attribute 'nope'"),
        ("models_under_test:not_a_module", MLP_INPUTS, "returned int, not a torch.nn.Module"),
        ("models_under_test:raises", MLP_INPUTS, "factory raised RuntimeError: weights file missing"),
        ("models_under_test:mlp", (parse_tensor_spec("x:float32:5"),), "failed on inputs shaped by the spec"),
        ("models_under_test:multi", MLP_INPUTS, "failed on inputs shaped by the spec"),
        ("not-a-ref", MLP_INPUTS, "neither a file nor 'module.path:factory'"),
    ],
)
def test_bad_sources_and_specs_are_usage_errors(tmp_path, source, inputs, message):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message):
        export_model(ExportRequest(source, inputs, out))
    assert not out.exists()


def test_wrong_number_of_output_names(tmp_path):
    with pytest.raises(UsageError, match="returns 2 outputs but 1"):
        export_model(ExportRequest("models_under_test:multi", MULTI_INPUTS, tmp_path / "o", ("only",)))


def test_existing_export_folder_is_not_overwritten(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="not empty"):
        export_model(ExportRequest("models_under_test:mlp", MLP_INPUTS, out))
    assert (out / "keep.txt").read_text() == "mine"


def test_dynamo_exporter(tmp_path):
    bundle = export_model(ExportRequest("models_under_test:mlp", MLP_INPUTS, tmp_path / "d", formats=("onnx",), onnx_exporter="dynamo", opset=18))
    assert bundle.parity["onnx"]["passed"]
    assert json.loads((bundle.path / "export.json").read_text())["formats"] == ["onnx"]


# --- dynamic lengths: transformers, and failures through the error tree -------------------------------------

TRANSFORMER = ("-i", "ids:int64:-1", "-i", "mask:float32:-1", "--output", "logits")


def test_transformer_with_dynamic_length_exports_by_default(tmp_path):
    """auto: the classic graph bakes the traced length, so dynamo is used, and parity holds at lengths 3, 5 and 9."""
    specs = (parse_tensor_spec("ids:int64:-1"), parse_tensor_spec("mask:float32:-1"))
    bundle = export_model(ExportRequest("zoo:transformer_masked", specs, tmp_path / "t", ("logits",), formats=("onnx",)))
    assert bundle.parity["onnx"]["passed"] and bundle.parity["onnx"]["exporter"] == "dynamo"
    graph = onnx.load(str(bundle.path / "model.onnx")).graph
    assert all(not d.HasField("dim_value") for d in graph.input[0].type.tensor_type.shape.dim)  # batch and length symbolic


def test_classic_exporter_on_a_transformer_fails_parity_with_a_hint_not_a_traceback(tmp_path):
    from support import run_mlctl

    result = run_mlctl("export", "zoo:transformer_masked", *TRANSFORMER, "-o", str(tmp_path / "t"), "-f", "onnx",
                       "--onnx-exporter", "torchscript")
    assert result.returncode == 6, result.stderr
    assert "Traceback" not in result.stderr
    assert "dynamic dims: ids dim 0, mask dim 0" in result.stderr and "--onnx-exporter dynamo" in result.stderr
    assert not (tmp_path / "t").exists() and list(tmp_path.iterdir()) == []


def test_exporter_failure_is_a_usage_error_naming_the_other_exporter(tmp_path):
    from support import run_mlctl

    # data-dependent control flow: the dynamo exporter refuses to export it at all
    result = run_mlctl("export", "models_under_test:broken", "-i", "x:float32:3", "-o", str(tmp_path / "b"), "-f", "onnx",
                       "--onnx-exporter", "dynamo")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "ONNX export with the dynamo exporter failed" in result.stderr and "try --onnx-exporter torchscript" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_parity_samples_cover_every_dynamic_size_and_trace_on_a_batch_above_one():
    from controlplane.export.samples import VARIABLE_DIM_SIZES, parity_samples

    specs = (parse_tensor_spec("ids:int64:-1"),)
    samples, labels, trace = parity_samples(specs, 8, (1, 4), np.random.default_rng(0), 10)
    assert sorted({s["ids"].shape for s in samples}) == sorted((b, n) for b in (1, 4) for n in VARIABLE_DIM_SIZES)
    assert samples[trace]["ids"].shape == (4, 5) and labels[trace] == "random batch 4, dynamic dims 5"
