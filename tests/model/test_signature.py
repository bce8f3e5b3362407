import pytest

from controlplane.errors import UsageError
from controlplane.model.signature import Signature, TensorSpec, parse_tensor_spec


def test_parse_tensor_spec():
    assert parse_tensor_spec("x:float32:3,4") == TensorSpec("x", "float32", (3, 4))
    assert parse_tensor_spec("tokens:int64:-1") == TensorSpec("tokens", "int64", (-1,))
    assert parse_tensor_spec("flag:bool:") == TensorSpec("flag", "bool", ())


@pytest.mark.parametrize(
    "text, message",
    [
        ("x:float32", "not name:dtype:dims"),
        ("x:complex64:3", "dtype 'complex64' is not supported"),
        ("x:float32:3,a", "must be integers"),
        ("x:float32:0", "must be positive or -1"),
        ("bad name:float32:3", "tensor name"),
    ],
)
def test_parse_tensor_spec_rejects(text, message):
    with pytest.raises(UsageError, match=message) as info:
        parse_tensor_spec(text)
    assert info.value.exit_code == 2


def test_shape_matching():
    spec = TensorSpec("x", "float32", (-1, 3))
    assert spec.matches_shape((2, 7, 3), batched=True)
    assert not spec.matches_shape((2, 7, 4), batched=True)
    assert not spec.matches_shape((7, 3), batched=True)
    assert spec.matches_shape((7, 3), batched=False)


def test_signature_round_trip_and_duplicates():
    sig = Signature((TensorSpec("a", "int64", (-1,)),), (TensorSpec("b", "float32", (2,)),), 8)
    assert Signature.from_dict(sig.to_dict()) == sig
    with pytest.raises(UsageError, match="repeated: a"):
        Signature((TensorSpec("a", "int64", (1,)),), (TensorSpec("a", "float32", (2,)),), 8)
