"""The gateway's pure fast-path parts, without servers: the KServe v2 codec against tritonclient's own encoder
and parser, the inference route table, prediction ids, and log rows turned into columns at flush."""

from __future__ import annotations

import math

import numpy as np
import pytest
from starlette.exceptions import HTTPException

from controlplane.feedback.gateway import v2
from controlplane.feedback.gateway.answer import IdSource
from controlplane.feedback.gateway.front import route_of
from controlplane.feedback.predrows import prediction_rows, rows_table


def tritonclient_request(x: np.ndarray, binary: bool, outputs: tuple[str, ...] = ()) -> tuple[bytes, int | None]:
    import tritonclient.http as httpclient
    from tritonclient.http._utils import _get_inference_request

    tensor = httpclient.InferInput("pixels", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    requested = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return _get_inference_request([tensor], "req-1", requested, 0, False, False, 0, None, None)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_tritonclient_request_parses_to_the_same_bytes(binary):
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    body, header_length = tritonclient_request(x, binary)
    request = v2.parse_request(body, header_length)
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("pixels", "FP32", (2, 4))
    np.testing.assert_array_equal(tensor.array(), x)
    assert request.id == "req-1" and request.binary_output is True and request.parameters == {}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_an_answer_reads_back_through_tritonclients_parser(binary):
    from tritonclient.http import InferResult

    y = np.array([[0.1, np.nan, 0.9]], dtype=np.float32)
    body, header_length = tritonclient_request(np.zeros((1, 4), np.float32), binary, outputs=("y",))
    request = v2.parse_request(body, header_length)
    data, length = v2.encode_answer("m", "3", request, [v2.Tensor("y", "FP32", (1, 3), y.tobytes())], {"mlctl_prediction_ids": "a"})
    assert (length is not None) == binary
    result = InferResult.from_response_body(data, header_length=length)
    got = result.as_numpy("y")
    assert got.shape == (1, 3) and got[0, 0] == pytest.approx(0.1) and math.isnan(got[0, 1])  # JSON: null comes back NaN
    assert result.get_response()["model_version"] == "3" and result.get_response()["id"] == "req-1"


@pytest.mark.parametrize("body, length, message", [
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}]}', None,
     "run past the end"),
    (b'{"inputs": []}', None, "non-empty"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, -2], "data": [1]}]}', None, "non-negative"),
    (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}', None, "'BYTES' is not supported"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}xxxx', 300, "outside the body"),
    ((b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": [{"name": "y", '
      b'"parameters": {"classification": 3}}]}'), None, "classification"),
])
def test_malformed_v2_requests_are_refused_naming_what(body, length, message):
    with pytest.raises(HTTPException) as refused:
        v2.parse_request(body, length)
    assert refused.value.status_code == 400 and message in refused.value.detail


def test_a_header_seen_before_is_parsed_once_and_its_byte_counts_still_checked():
    x, y = np.zeros((2, 4), np.float32), np.ones((2, 4), np.float32)
    first, length = tritonclient_request(x, True)
    second, _ = tritonclient_request(y, True)
    a, b = v2.parse_request(first, length), v2.parse_request(second, length)
    assert a.layout is b.layout and a.layout is not None  # one parse of the header for both
    np.testing.assert_array_equal(a.inputs[0].array(), x)
    np.testing.assert_array_equal(b.inputs[0].array(), y)  # each request's own bytes
    with pytest.raises(HTTPException, match="run past the end"):
        v2.parse_request(second[:-4], length)
    with pytest.raises(HTTPException, match="holds 36 bytes"):
        v2.parse_request(second + b"\0" * 4, length)
    json_body, none = tritonclient_request(x, False)
    assert none is None and v2.parse_request(json_body, None).layout is not v2.parse_request(json_body, None).layout


def test_extra_binary_bytes_are_refused():
    header = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}'
    with pytest.raises(HTTPException, match="add up to 4"):
        v2.parse_request(header + b"\0" * 8, len(header))


def test_routes_of_inference_paths():
    assert route_of("/v1/models/digits/predict") == ("predict", "digits", "")
    assert route_of("/v2/models/digits/infer") == ("infer", "digits", "")
    assert route_of("/v2/models/digits/versions/3/infer") == ("infer", "digits", "3")
    for other in ("/v1/feedback", "/v2/models/digits", "/v2/models//infer", "/v2/models/digits/versions//infer", "/metrics"):
        assert route_of(other) is None


def test_prediction_ids_are_unique_and_differ_between_processes():
    first, second = IdSource(), IdSource()
    ids = first.take(1000) + second.take(1000)
    assert len(set(ids)) == 2000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert first.prefix != second.prefix


def test_rows_become_the_logs_columns_at_flush():
    outputs = np.array([[0.1, 0.9], [np.nan, 0.5], [0.7, 0.3]])
    rows = [prediction_rows("m", "1", ["a", "b", "c"], np.arange(6.0).reshape(3, 2), outputs, True, 2.0, "ok"),
            prediction_rows("m", "1", ["z"], None, None, False, 1.0, "error")]
    table = rows_table(rows).to_pylist()
    assert [r["prediction_id"] for r in table] == ["a", "b", "c", "z"]
    assert [r["predicted"] for r in table] == [1, None, 0, None]  # no class for a non-finite score or no answer
    assert table[1]["features"] == [2.0, 3.0] and math.isnan(table[1]["outputs"][0])
    assert table[3]["features"] == [] and table[3]["outputs"] == [] and table[3]["status"] == "error"


def test_a_flush_of_mixed_requests_gives_each_row_its_own_values():
    """Requests of different kinds and widths in one segment (scores of 3 and of 2, a label output, a failure, an
    output map on some): each row's columns are those of its own request, as if it were converted alone."""
    rng = np.random.default_rng(1)
    scores3, scores2 = rng.random((2, 3)), np.array([[0.2, 0.8]], np.float32)
    batches = [
        prediction_rows("m", "1", ["a", "b"], rng.random((2, 4)), scores3, True, 1.0, "ok", more={"emb": np.ones((2, 2))}),
        prediction_rows("m", "1", ["c"], None, None, False, 2.0, "error"),
        prediction_rows("m", "2", ["d"], np.arange(3, dtype=np.uint8).reshape(1, 3), scores2, True, 3.0, "ok"),
        prediction_rows("m", "2", ["e", "f"], rng.random((2, 4)), np.array([[0.5], [0.1]]), False, 4.0, "ok",
                        more={"digit": np.array([[5], [-2]]), "emb": np.zeros((2, 2))}, labels=np.array([[5], [-2]])),
        prediction_rows("m", "1", ["g"], rng.random((1, 4)), np.array([[np.inf, 0.1, 0.2]]), True, 5.0, "ok"),
    ]
    together = rows_table(batches).to_pylist()
    alone = [row for b in batches for row in rows_table([b]).to_pylist()]
    assert [r["predicted"] for r in together] == [int(np.argmax(scores3[0])), int(np.argmax(scores3[1])), None, 1, 5, None, None]
    assert [r["features"] for r in together] == [r["features"] for r in alone]
    assert together[3]["features"] == [0.0, 1.0, 2.0] and together[2]["outputs"] == []
    assert [dict(r["more_outputs"]) for r in together] == [dict(r["more_outputs"]) for r in alone]
    assert dict(together[4]["more_outputs"]) == {"digit": [5.0], "emb": [0.0, 0.0]} and together[2]["more_outputs"] == []
    assert [(r["version"], r["latency_ms"], r["status"]) for r in together] == [(r["version"], r["latency_ms"], r["status"]) for r in alone]


def served(signature_specs: tuple[str, ...], max_batch: int):
    from controlplane.feedback.gateway.upstream import model_info
    from controlplane.model import config as model_config
    from controlplane.model.config import ServingOptions
    from controlplane.model.signature import Signature, parse_tensor_spec

    signature = Signature(tuple(parse_tensor_spec(s) for s in signature_specs), (parse_tensor_spec("probabilities:float32:3"),), max_batch)
    return model_info(model_config.build_config("m", "onnx", signature, ServingOptions()))


def test_the_quick_input_check_agrees_with_the_full_one():
    from controlplane.errors import UsageError
    from controlplane.feedback.gateway.forward import checked, fits
    from controlplane.model.tensor_io import check_inputs

    info = served(("pixels:float32:4", "mask:int64:-1"), 8)
    assert info.float_inputs == ("pixels",) and info.classes == 3
    good = {"pixels": np.zeros((2, 4), np.float32), "mask": np.ones((2, 5), np.int64)}
    cases = [good, {"mask": good["mask"], "pixels": good["pixels"]},  # another order: converted by the full check
             {**good, "pixels": good["pixels"].astype(np.float64)}, {**good, "pixels": np.zeros((2, 5), np.float32)},
             {**good, "mask": np.ones((3, 5), np.int64)}, {"pixels": good["pixels"]}, {**good, "extra": good["mask"]},
             {"pixels": np.zeros((9, 4), np.float32), "mask": np.ones((9, 1), np.int64)},
             {**good, "pixels": np.zeros((4, 2), np.float32).T}]
    for arrays in cases:
        try:
            full = check_inputs(arrays, info.signature.inputs, info.signature.max_batch_size, "inputs")
        except UsageError:
            full = None
        if fits(info, arrays):  # only ever what the full check passes unchanged
            assert full is not None and list(full) == list(arrays)
            assert all(full[name] is arrays[name] or np.shares_memory(full[name], arrays[name]) for name in arrays)
        if full is None:
            with pytest.raises(HTTPException) as refused:
                checked("m", info, arrays, 400)
            assert refused.value.status_code == 400
        else:
            assert list(checked("m", info, arrays, 400)) == ["pixels", "mask"]
    assert fits(info, good) and not fits(info, cases[1])


def test_the_non_finite_check_names_the_row_and_lets_big_finite_values_through():
    from controlplane.feedback.gateway.forward import checked

    info = served(("x:float16:2",), 8)
    big = np.full((3, 2), 60000, np.float16)  # finite, though their float16 sum would not be
    assert checked("m", info, {"x": big}, 400)["x"] is big
    big[2, 1] = np.nan
    with pytest.raises(HTTPException, match="row 2 holds nan"):
        checked("m", info, {"x": big}, 400)


def test_a_model_answering_its_class_in_one_integer_output_has_that_class_in_the_answer_and_the_log(tmp_path):
    """A pipeline's post step answering the digit (and its confidence): the digit is the class, as the arg-max is a
    score classifier's; its feedback labels are not held to a number of classes it does not declare."""
    import orjson

    from controlplane.feedback.gateway.answer import answer_body, classes_of, label_output, log_rows
    from controlplane.feedback.predlog import PredictionLog, find_predictions
    from controlplane.model.signature import Signature, parse_tensor_spec
    from controlplane.store import open_store

    def signature(*outputs: str, batch: int = 8) -> Signature:
        return Signature((parse_tensor_spec("raw:uint8:8"),), tuple(parse_tensor_spec(o) for o in outputs), batch)

    labelled = signature("digit:int64:1", "confidence:float32:1")
    assert classes_of(labelled) is None and label_output(labelled) == "digit"
    assert label_output(signature("digit:uint8:", batch=0)) == "digit"
    for other in (("scores:float32:3",), ("a:int64:1", "b:int32:1"), ("digits:int64:2",), ("tag:float32:1",)):
        assert label_output(signature(*other)) is None, other
    raw = np.zeros((3, 8), np.uint8)
    outputs = {"digit": np.array([[7], [2], [-1]], np.int64), "confidence": np.array([[0.9], [0.8], [0.1]], np.float32)}
    body = orjson.loads(answer_body("p", "1", labelled, outputs, ["a", "b", "c"], 1.0))
    assert [p["predicted_class"] for p in body["predictions"]] == [7, 2, None] and "probabilities" not in body["predictions"][0]
    rows = log_rows("p", "1", labelled, {"raw": raw}, outputs, ["a", "b", "c"], 1.0, "ok")
    assert [r["predicted"] for r in rows_table([rows]).to_pylist()] == [7, 2, None]  # a negative label is no class
    unbatched = signature("digit:int32:", batch=0)
    assert log_rows("p", "1", unbatched, {"raw": raw[0]}, {"digit": np.array(4, np.int32)}, ["d"], 1.0, "ok").records()[0]["predicted"] == 4
    store = open_store(str(tmp_path / "log"))
    log = PredictionLog(store)
    log.predictions("p").append(rows)
    scores = signature("scores:float32:3")
    log.predictions("m").append(log_rows("m", "1", scores, {"raw": raw[:1]}, {"scores": np.array([[0.1, 0.7, 0.2]], np.float32)},
                                         ["s"], 1.0, "ok"))
    log.close()
    assert find_predictions(store, {"a", "s"}) == {"a": ("p", None), "s": ("m", 3)}  # labels of p are not range-checked
