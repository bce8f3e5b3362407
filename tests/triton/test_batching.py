import numpy as np

from controlplane.model.signature import TensorSpec
from controlplane.triton.backends.batching import (
    check_outputs,
    concat_batch,
    group_requests,
    split_batch,
)
from controlplane.triton.backends.torch_model import argument_order


def test_group_concat_split_round_trip():
    requests = [
        {"x": np.ones((1, 3), np.float32)},
        {"x": np.zeros((2, 5), np.float32)},  # another per-sample shape: its own group
        {"x": np.full((3, 3), 2, np.float32)},
    ]
    groups = group_requests(requests)
    assert sorted(groups) == [[0, 2], [1]]
    batch, sizes = concat_batch([requests[i] for i in [0, 2]])
    assert batch["x"].shape == (4, 3) and sizes == [1, 3]
    back = split_batch({"y": batch["x"] * 10}, sizes)
    assert back[0]["y"].shape == (1, 3) and (back[1]["y"] == 20).all()


def test_check_outputs_like_a_native_backend():
    specs = [TensorSpec("y", "float32", (4,))]
    good = {"y": np.zeros((2, 4), np.float32)}
    assert check_outputs(specs, good, batched=True, batch_size=2) is None
    assert "dtype float64" in check_outputs(specs, {"y": np.zeros((2, 4))}, True, 2)
    assert "shape [2, 5]" in check_outputs(specs, {"y": np.zeros((2, 5), np.float32)}, True, 2)
    assert "batch size 2 for a batch of 3" in check_outputs(specs, good, True, 3)
    assert "no output 'y'" in check_outputs(specs, {}, True, 2)


def test_torchscript_argument_order():
    assert argument_order(["b", "a"], ["a", "b"]) == ["a", "b"]
    assert argument_order(["IN__1", "IN__0"], ["x", "y"]) == ["IN__0", "IN__1"]
    assert argument_order(["p", "q"], ["x", "y"]) == ["p", "q"]  # the config's order, as the native backend
