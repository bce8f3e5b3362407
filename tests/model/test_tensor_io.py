import json

import numpy as np
import pytest

from controlplane.errors import NotFoundError, UsageError
from controlplane.model.signature import TensorSpec
from controlplane.model.tensor_io import load_inputs

SPECS = (TensorSpec("tokens", "int64", (-1,)), TensorSpec("feats", "float32", (2,)))


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_json_numbers_take_the_model_dtype(tmp_path):
    arrays = load_inputs(write_json(tmp_path / "in.json", {"tokens": [[1, 2, 3]], "feats": [[0.5, 1]]}), SPECS, 8)
    assert arrays["tokens"].dtype == np.int64 and arrays["feats"].dtype == np.float32


def test_npz_and_npy(tmp_path):
    np.savez(tmp_path / "in.npz", tokens=np.zeros((2, 4), np.int64), feats=np.zeros((2, 2), np.float32))
    assert load_inputs(tmp_path / "in.npz", SPECS, 8)["tokens"].shape == (2, 4)
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float32))
    assert load_inputs(tmp_path / "x.npy", SPECS[1:], 8)["feats"].shape == (1, 2)
    with pytest.raises(UsageError, match="a .npy file holds one tensor"):
        load_inputs(tmp_path / "x.npy", SPECS, 8)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"tokens": [[1]], "feats": [["a", "b"]]}, "non-numeric"),
        ({"tokens": [[1.5]], "feats": [[0, 0]]}, "fractional numbers"),
        ({"tokens": [[1]], "feats": [[0, 0, 0]]}, r"shape \[1, 3\], the model expects feats: float32\[batch, 2\]"),
        ({"tokens": [[1]]}, "missing feats"),
        ({"tokens": [[1]], "feats": [[0, 0]], "extra": [1]}, "unknown extra"),
        ({"tokens": [[1], [2]], "feats": [[0, 0]]}, "disagree on the batch size"),
        ({"tokens": [[1]] * 9, "feats": [[0, 0]] * 9}, "exceeds the model's max batch size 8"),
        ({"tokens": [[1], [2, 3]], "feats": [[0, 0]]}, "not a rectangular array|non-numeric"),
    ],
)
def test_bad_json_inputs_are_named(tmp_path, data, message):
    with pytest.raises(UsageError, match=message):
        load_inputs(write_json(tmp_path / "in.json", data), SPECS, 8)


def test_npy_dtype_is_strict(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float64))
    with pytest.raises(UsageError, match="dtype float64, the model expects float32"):
        load_inputs(tmp_path / "x.npy", SPECS[1:], 8)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(NotFoundError):
        load_inputs(tmp_path / "nope.json", SPECS, 8)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(UsageError, match="unsupported input file type"):
        load_inputs(tmp_path / "x.csv", SPECS, 8)
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(UsageError, match="could not be read"):
        load_inputs(tmp_path / "broken.npy", SPECS[1:], 8)
