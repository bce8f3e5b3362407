import numpy as np

from controlplane.export.parity import compare


def test_identical_outputs_pass_with_zero_error():
    out = [{"y": np.array([[1.0, 2.0]], np.float32)}]
    result = compare(out, out, atol=0, rtol=0)
    assert result.passed and result.max_abs_error == 0 and result.max_rel_error == 0


def test_error_beyond_tolerance_fails_and_names_the_worst():
    expected = [{"y": np.array([1.0, 100.0])}, {"y": np.array([1.0, 1.0])}]
    actual = [{"y": np.array([1.0, 100.05])}, {"y": np.array([1.5, 1.0])}]
    result = compare(expected, actual, atol=1e-3, rtol=1e-3, labels=["a", "b"])
    assert not result.passed
    assert result.max_abs_error == 0.5
    assert result.worst == "y in b"
    assert abs(result.max_rel_error - 0.5) < 1e-12
    # within tolerance once it is loose enough
    assert compare(expected, actual, atol=0.6, rtol=0).passed


def test_shape_mismatch_fails():
    result = compare([{"y": np.zeros((2, 3))}], [{"y": np.zeros((3, 2))}], 1, 1)
    assert not result.passed and "shape" in result.worst
