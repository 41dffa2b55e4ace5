"""The one codec (common/wire.py): every message kind and allowed dtype round-trips, decoded arrays
are zero-copy views, and every disallowed dtype or malformed body raises DecodeError with a reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common import wire, wire_arrays
from common.errors import DecodeError
from common.messages import (
    MESSAGE_TYPES,
    EvalReport,
    EvalRequest,
    Event,
    GlobalModel,
    MaskSeed,
    ModelNotice,
    ModelRequest,
    ShardLease,
    TrainTask,
    UnmaskAnswer,
    UnmaskRequest,
    WeightUpdate,
)

WEIGHTS = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([0.5, -1.5], np.float32))
UPDATE = WeightUpdate(update_id="u1", worker_id="w1", task_id="t1", base_version=2,
                      num_examples=40, train_seconds=0.5, weights=WEIGHTS, is_delta=True,
                      metrics={"loss": 0.25, "accuracy": 1})
EXAMPLES: dict[str, Any] = {
    "train_task": TrainTask(task_id="t1", job="j", min_version=3, local_epochs=1, batch_size=8,
                            learning_rate=0.25, send_delta=True, issued_at=12.5),
    "weight_update": UPDATE,
    "global_model": GlobalModel(version=7, fingerprint="abc123", weights=WEIGHTS, created_at=1.0),
    "model_notice": ModelNotice(version=7, fingerprint="abc123", created_at=1.0),
    "model_request": ModelRequest(worker_id="w1", have_version=4),
    "event": Event(name="rejected", job="j", at=3.0,
                   fields={"version": 3, "loss": 0.5, "code": "stale", "detail": None}),
    "shard_lease": ShardLease(shard_index=1, num_shards=3, job="j"),
    "eval_request": EvalRequest(version=5, sample=0.5),
    "eval_report": EvalReport(worker_id="w", request_version=5, version=6, num_examples=30,
                              metrics={"loss": 0.5, "auc": 0.9}),
    "mask_seed": MaskSeed(update_id="u1", worker_id="w1", job="j", seed=bytes(range(32))),
    "unmask_request": UnmaskRequest(buffer_id="b1", job="j", coordinates=6,
                                    weights={"u1": 16, "u2": 3}, seeds={"u1": b"\x00s1",
                                                                        "u2": b"s2"}),
    "unmask_answer": UnmaskAnswer(buffer_id="b1", answered=True, code="ok", reason="",
                                  mask_sum=(np.arange(6, dtype=np.uint32),)),
}


# ---------------------------------------------------------------- helpers

def packed(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def body_of(message: Any = UPDATE, **top: object) -> dict[str, Any]:
    """The outer map of an encoded message, with top-level entries replaced by `top`."""
    envelope = wire.to_envelope(message)
    return {"schema": envelope.schema, "kind": envelope.kind, "header": dict(envelope.header),
            "payload": envelope.payload} | top


def with_header(message: Any = UPDATE, **fields: object) -> bytes:
    """An encoded message whose header has some fields replaced or added."""
    body = body_of(message)
    return packed(body | {"header": body["header"] | fields})


def with_header_keys(extra: dict[Any, object]) -> bytes:
    """An encoded update whose header has extra entries under arbitrary (e.g. bytes) keys."""
    body = body_of()
    return packed(body | {"header": body["header"] | extra})


def with_payload(payload: object) -> bytes:
    return packed(body_of(payload=packed(payload)))


def with_metrics(metrics: object) -> bytes:
    """An update whose (payload) metrics are replaced."""
    return with_payload({"weights": [wire_arrays.encode_array(w) for w in WEIGHTS],
                         "metrics": metrics})


def with_array(**entries: object) -> bytes:
    """An update whose first weight array has some entries (dtype, shape, data) replaced."""
    array = wire_arrays.encode_array(WEIGHTS[0]) | entries
    return with_payload({"weights": [array, wire_arrays.encode_array(WEIGHTS[1])], "metrics": {}})


def assert_same(left: Any, right: Any) -> None:
    assert type(left) is type(right)
    for field in dataclasses.fields(left):
        a, b = getattr(left, field.name), getattr(right, field.name)
        if isinstance(a, tuple):
            assert len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes())
        else:
            assert a == b, field.name


def owner_of(array: np.ndarray) -> object:
    """The object at the end of an array's chain of bases."""
    owner: object = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    return owner


def extreme_values(dtype: np.dtype) -> np.ndarray:
    """A few values at the edges of a dtype's range (NaN, Inf and -0.0 for floats)."""
    if dtype.kind == "f":
        info = np.finfo(dtype)
        values = [info.min, info.max, info.tiny, -0.0, np.nan, np.inf, -np.inf, 1.5]
    else:
        info_i = np.iinfo(dtype)
        values = [info_i.min, info_i.max, 0, 1]
    return np.array(values, dtype=dtype)


def assert_decode_error(body: object, reason: str, **kwargs: Any) -> None:
    with pytest.raises(DecodeError, match=reason) as caught:
        wire.decode(body, **kwargs)  # type: ignore[arg-type]
    assert caught.value.reason == str(caught.value) and caught.value.reason


# ---------------------------------------------------------------- round trips

def test_there_is_an_example_of_every_message_kind() -> None:
    assert set(EXAMPLES) == set(MESSAGE_TYPES)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_every_message_kind_round_trips(kind: str) -> None:
    # Given a message of each kind
    message = EXAMPLES[kind]
    # When it is encoded and decoded as that kind
    decoded = wire.decode(wire.encode(message), expect=type(message))
    # Then every field comes back equal, arrays byte for byte
    assert_same(decoded, message)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_defaults_survive_the_round_trip(kind: str) -> None:
    # Given a message built with only its required fields
    cls = MESSAGE_TYPES[kind]
    required = {f.name: getattr(EXAMPLES[kind], f.name) for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    message = cls(**required)
    # When it round-trips, then it is unchanged
    assert_same(wire.decode(wire.encode(message)), message)


def test_an_event_keeps_the_type_of_each_field_value() -> None:
    event = wire.decode(wire.encode(EXAMPLES["event"]), expect=Event)
    assert [type(v) for v in event.fields.values()] == [int, float, str, type(None)]


def test_integer_metrics_are_read_as_floats() -> None:
    update = wire.decode(wire.encode(UPDATE), expect=WeightUpdate)
    assert type(update.metrics["accuracy"]) is float and update.metrics["accuracy"] == 1.0


@pytest.mark.parametrize("dtype", sorted(wire_arrays.ALLOWED_DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (4,), (2, 0, 3), (2, 3, 4)], ids=str)
def test_every_allowed_dtype_and_shape_round_trips_in_a_message(dtype: str,
                                                                shape: tuple[int, ...]) -> None:
    # Given a global model holding one array of that dtype and shape
    array = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
    model = GlobalModel(version=1, fingerprint="f", weights=(array,))
    # When it goes through the codec
    (decoded,) = wire.decode(wire.encode(model), expect=GlobalModel).weights
    # Then dtype, shape and bytes are preserved
    assert (decoded.dtype.str, decoded.shape) == (dtype, shape)
    assert decoded.tobytes() == array.tobytes()


@pytest.mark.parametrize("dtype", sorted(wire_arrays.ALLOWED_DTYPES))
def test_extreme_values_survive_bit_for_bit(dtype: str) -> None:
    # Given the edge values of a dtype (NaN, Inf and -0.0 included for floats)
    array = extreme_values(np.dtype(dtype))
    # When encoded and decoded, then the bytes are identical
    assert wire_arrays.decode_array(wire_arrays.encode_array(array)).tobytes() == array.tobytes()


@pytest.mark.parametrize("dtype", sorted(d for d in wire_arrays.ALLOWED_DTYPES if d[0] == "<"))
def test_big_endian_input_is_sent_little_endian(dtype: str) -> None:
    # Given a big-endian array of an allowed type
    big = np.array([1, 2, 100], dtype=np.dtype(dtype).newbyteorder(">"))
    # When it is encoded
    encoded = wire_arrays.encode_array(big)
    # Then it travels in the little-endian form and decodes to the same values
    assert encoded["dtype"] == dtype
    decoded = wire_arrays.decode_array(encoded)
    assert decoded.dtype.str == dtype and np.array_equal(decoded, big)


def test_non_contiguous_arrays_are_sent_in_c_order() -> None:
    # Given a Fortran-ordered array and a strided view
    fortran = np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4))
    strided = np.arange(20, dtype=np.float64)[::3]
    # When they round-trip, then their values are unchanged
    for array in (fortran, strided):
        assert np.array_equal(wire_arrays.decode_array(wire_arrays.encode_array(array)), array)


@pytest.mark.parametrize("shape", [(), (0,), (3, 2)], ids=str)
def test_decoded_arrays_are_read_only_views_of_the_message_bytes(shape: tuple[int, ...]) -> None:
    # Given an update carrying an array
    update = dataclasses.replace(UPDATE, weights=(np.ones(shape, np.float32),))
    # When it is decoded
    (array,) = wire.decode(wire.encode(update), expect=WeightUpdate).weights
    # Then the array is a zero-copy view on bytes (np.frombuffer), so it cannot be written
    assert isinstance(owner_of(array), bytes)
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        array[...] = 0


def test_header_fields_are_readable_without_opening_the_payload() -> None:
    # Given an encoded update, when only the envelope is unpacked
    envelope = wire.unpack_envelope(wire.encode(UPDATE))
    # Then routing fields are in the clear and the weights stay opaque payload bytes
    assert envelope.kind == "weight_update" and envelope.header["worker_id"] == "w1"
    assert "weights" not in envelope.header and isinstance(envelope.payload, bytes)


# ---------------------------------------------------------------- disallowed dtypes

DISALLOWED_ON_THE_WIRE = {
    "object": "|O", "void": "|V8", "structured": np.dtype([("a", "<f4")]).str,
    "structured descr": [["a", "<f4"]], "complex64": "<c8", "complex128": "<c16",
    "bool": "|b1", "datetime": "<M8[s]", "timedelta": "<m8[s]", "unicode string": "<U3",
    "byte string": "|S3", "big-endian float32": ">f4", "big-endian int64": ">i8",
    "big-endian uint16": ">u2", "long double": "<f16", "numpy name": "float32",
    "short code": "f4", "not a string": 5, "nil": None,
}


@pytest.mark.parametrize("case", list(DISALLOWED_ON_THE_WIRE))
def test_disallowed_dtypes_on_the_wire_are_rejected(case: str) -> None:
    # Given an array map naming a dtype outside the allowlist (with plenty of data)
    bad = {"dtype": DISALLOWED_ON_THE_WIRE[case], "shape": [1], "data": b"\x00" * 16}
    # When it is decoded directly or inside an update, then DecodeError says it is not allowed
    with pytest.raises(DecodeError, match="not allowed"):
        wire_arrays.decode_array(bad)
    assert_decode_error(with_array(**bad), "not allowed")


DISALLOWED_ARRAYS = {
    "object": np.array([object()]), "void": np.zeros(2, dtype="V4"),
    "structured": np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]),
    "complex64": np.array([1 + 2j], np.complex64), "complex128": np.array([1 + 2j]),
    "bool": np.array([True, False]), "datetime": np.array(["2024-01-01"], "datetime64[D]"),
    "timedelta": np.array([5], "timedelta64[s]"), "unicode": np.array(["x"]),
    "bytes": np.array([b"x"]), "long double": np.array([1.0], np.longdouble),
}


@pytest.mark.parametrize("case", list(DISALLOWED_ARRAYS))
def test_disallowed_dtypes_are_refused_when_encoding(case: str) -> None:
    array = DISALLOWED_ARRAYS[case]
    # long double is plain float64 on some platforms
    if array.dtype.str in wire_arrays.ALLOWED_DTYPES:
        pytest.skip(f"{case} is {array.dtype.str} here")
    # Given a message carrying an array of a disallowed dtype, when it is encoded
    message = GlobalModel(version=0, fingerprint="f", weights=(array,))
    # Then the codec refuses it instead of sending something the other side cannot trust
    with pytest.raises(DecodeError, match="not allowed"):
        wire.encode(message)


# ---------------------------------------------------------------- malformed bodies

MALFORMED = {
    # not msgpack at all
    "empty body": (b"", "not valid msgpack"),
    "reserved byte": (b"\xc1", "not valid msgpack"),
    "trailing bytes": (wire.encode(UPDATE) + b"\x00", "not valid msgpack"),
    "text": (b"{'schema': 1}", "not valid msgpack"),
    "integer map keys": (packed({1: 2}), "not valid msgpack"),
    # not a map
    "array": (packed([1, 2, 3]), "must be a map"),
    "integer": (packed(7), "must be a map"),
    "string": (packed("weight_update"), "must be a map"),
    "nil": (packed(None), "must be a map"),
    # schema and kind
    "schema 2": (packed(body_of(schema=2)), "unknown schema"),
    "schema 0": (packed(body_of(schema=0)), "unknown schema"),
    "schema as text": (packed(body_of(schema="1")), "unknown schema"),
    "schema true": (packed(body_of(schema=True)), "unknown schema"),
    "schema 1.0": (packed(body_of(schema=1.0)), "unknown schema"),
    "no schema": (packed({k: v for k, v in body_of().items() if k != "schema"}),
                  "unknown schema"),
    "unknown kind": (packed(body_of(kind="pickle")), "unknown message kind"),
    "kind as number": (packed(body_of(kind=5)), "unknown message kind"),
    "kind as list": (packed(body_of(kind=["weight_update"])), "unknown message kind"),
    "kind as map": (packed(body_of(kind={"weight_update": 1})), "unknown message kind"),
    "no kind": (packed({k: v for k, v in body_of().items() if k != "kind"}),
                "unknown message kind"),
    # envelope parts
    "header not a map": (packed(body_of(header=[1])), "header map and payload bytes"),
    "no header": (packed({k: v for k, v in body_of().items() if k != "header"}),
                  "header map and payload bytes"),
    "payload text": (packed(body_of(payload="text")), "header map and payload bytes"),
    "no payload": (packed({k: v for k, v in body_of().items() if k != "payload"}),
                   "header map and payload bytes"),
    "payload not msgpack": (packed(body_of(payload=b"\xc1")), "payload is not valid msgpack"),
    "payload not a map": (with_payload([1]), "payload must hold exactly"),
    "payload without weights": (with_payload({}), "payload must hold exactly"),
    "payload extra field": (with_payload({"weights": [], "x": 1}), "payload must hold exactly"),
    "garbage payload of a header-only kind": (
        packed(body_of(EXAMPLES["train_task"], payload=b"\xc1garbage")), "payload"),
    "fields in the payload of a header-only kind": (
        packed(body_of(EXAMPLES["model_request"], payload=packed({"worker_id": "x"}))),
        "payload"),
    # fields
    "missing field": (packed(body_of(header={"update_id": "u"})), "missing fields"),
    "extra field": (with_header(surprise=1), "unknown fields"),
    "payload field repeated in the header": (with_header(weights=[]), "weights"),
    "bytes field name": (with_header_keys({b"x": 1}), "field"),
    "bytes and text field names": (with_header_keys({b"x": 1, "y": 2}), "field"),
    "bool for int": (with_header(base_version=True), "base_version"),
    "bool for int (count)": (with_header(num_examples=False), "num_examples"),
    "float for int": (with_header(num_examples=1.5), "num_examples"),
    "str for int": (with_header(base_version="3"), "base_version"),
    "nil for int": (with_header(base_version=None), "base_version"),
    "str for float": (with_header(train_seconds="fast"), "train_seconds"),
    "bool for float": (with_header(train_seconds=True), "train_seconds"),
    "int for str": (with_header(worker_id=5), "worker_id"),
    "bytes for str": (with_header(worker_id=b"w"), "worker_id"),
    "int for bool": (with_header(is_delta=1), "is_delta"),
    "list for map": (with_metrics([1.0]), "metrics"),
    "str metric value": (with_metrics({"loss": "low"}), "metrics"),
    "bool metric value": (with_metrics({"loss": False}), "metrics"),
    "bytes metric name": (with_metrics({b"loss": 1.0}), "metrics"),
    "weights not a list": (with_payload({"weights": {"a": 1}}), "weights"),
    "weight not an array map": (with_payload({"weights": [1.0], "metrics": {}}),
                                "exactly dtype, shape"),
    "event field list": (with_header(EXAMPLES["event"], fields={"x": [1]}), "fields"),
    "event field bool": (with_header(EXAMPLES["event"], fields={"x": True}), "fields"),
    "task epochs as text": (with_header(EXAMPLES["train_task"], local_epochs="2"),
                            "local_epochs"),
    "model version as float": (with_header(EXAMPLES["global_model"], version=1.0), "version"),
    "request version nil": (with_header(EXAMPLES["model_request"], have_version=None),
                            "have_version"),
    # arrays
    "too few bytes": (with_array(data=b"\x00" * 20), "has 20 bytes, shape \\[2, 3\\] needs 24"),
    "too many bytes": (with_array(data=b"\x00" * 28), "has 28 bytes"),
    "negative dimension": (with_array(shape=[-2, -3]), "bad array shape"),
    "float dimension": (with_array(shape=[2.0, 3]), "bad array shape"),
    "bool dimension": (with_array(shape=[True, 6]), "bad array shape"),
    "text dimension": (with_array(shape=["2", 3]), "bad array shape"),
    "shape not a list": (with_array(shape=6), "bad array shape"),
    "too many dimensions": (with_array(shape=[1] * (wire_arrays.MAX_NDIM + 1), data=b"\x00" * 4),
                            "bad array shape"),
    "huge dimension next to zero": (with_array(shape=[0, 2**63], data=b""), "shape"),
    "huge dimensions next to zero": (with_array(shape=[0, 2**62, 2**62], data=b""), "shape"),
    "data as text": (with_array(data="\x00" * 24), "must be bytes"),
    "data as list": (with_array(data=[0] * 24), "must be bytes"),
    "array missing data": (with_payload({"weights": [{"dtype": "<f4", "shape": [0]}],
                                         "metrics": {}}),
                           "exactly dtype, shape and data"),
    "array extra entry": (with_array(order="F"), "exactly dtype, shape and data"),
    # msgpack extension types, anywhere
    "ext type body": (packed(msgpack.ExtType(5, b"x")), "extension type 5"),
    "ext type in header": (with_header(worker_id=msgpack.ExtType(1, b"w")), "extension type 1"),
    "ext type in payload": (with_payload({"weights": msgpack.ExtType(42, b"")}),
                            "extension type 42"),
    "ext type as array data": (with_array(data=msgpack.ExtType(3, b"\x00" * 24)),
                               "extension type 3"),
    "timestamp in header": (with_header(train_seconds=msgpack.Timestamp(1, 0)), "train_seconds"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_bodies_raise_decode_error_with_a_reason(case: str) -> None:
    # Given a body that is wrong in one way, when it is decoded
    body, reason = MALFORMED[case]
    # Then DecodeError (and nothing else) is raised, naming what is wrong
    assert_decode_error(body, reason)


def test_every_truncation_of_a_valid_body_is_a_decode_error() -> None:
    # Given a valid encoded update, when any proper prefix of it is decoded
    body = wire.encode(UPDATE)
    for cut in range(len(body)):
        # Then it is a DecodeError
        with pytest.raises(DecodeError):
            wire.decode(body[:cut])


def test_a_body_over_the_limit_is_rejected_and_one_at_the_limit_is_not() -> None:
    # Given an encoded global model of n bytes
    body = wire.encode(EXAMPLES["global_model"])
    # When decoded with a limit of n - 1, then it is refused before parsing
    assert_decode_error(body, f"{len(body)} bytes exceeds the limit of {len(body) - 1}",
                        max_bytes=len(body) - 1)
    # And with a limit of exactly n it decodes
    assert wire.decode(body, max_bytes=len(body)).KIND == "global_model"


def test_the_default_limit_is_16_mib() -> None:
    too_big = b"\x00" * (wire.DEFAULT_MAX_BYTES + 1)
    assert_decode_error(too_big, "exceeds the limit")


@pytest.mark.parametrize("body", ["text", None, 123, [b"\x80"]], ids=repr)
def test_a_body_that_is_not_bytes_is_rejected(body: object) -> None:
    assert_decode_error(body, "must be bytes")


def test_bytearray_and_memoryview_bodies_are_accepted() -> None:
    body = wire.encode(UPDATE)
    for view in (bytearray(body), memoryview(body)):
        assert_same(wire.decode(view), UPDATE)  # type: ignore[arg-type]


def test_expecting_one_kind_rejects_another() -> None:
    # Given an encoded train task, when decoded as a weight update
    # Then DecodeError names both kinds
    assert_decode_error(wire.encode(EXAMPLES["train_task"]),
                        "expected weight_update, got train_task", expect=WeightUpdate)


def test_expecting_the_right_kind_returns_the_message() -> None:
    assert isinstance(wire.decode(wire.encode(UPDATE), expect=WeightUpdate), WeightUpdate)


# ---------------------------------------------------------------- fuzzing

@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise_anything_but_decode_error(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        wire.decode(body)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_valid_bodies_never_raise_anything_but_decode_error(data: st.DataObject) -> None:
    # Given a valid body with a few bytes overwritten
    body = bytearray(wire.encode(UPDATE))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    # When it is decoded, then it either decodes or raises DecodeError
    with contextlib.suppress(DecodeError):
        wire.decode(bytes(body))


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8)
    | st.sampled_from(["weight_update", "event", "<f4", "|u1", 1, 0, -1]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6) | st.binary(max_size=3), inner, max_size=4),
    max_leaves=12)
PLACES = ["schema", "kind", "header", "payload", "payload map", "dtype", "shape", "data"]
HEADER_FIELDS = [f.name for f in dataclasses.fields(WeightUpdate)] + ["unknown"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(PLACES + HEADER_FIELDS), MSGPACK_VALUES)
def test_any_value_in_any_place_never_raises_anything_but_decode_error(place: str,
                                                                       value: object) -> None:
    # Given a valid update where one place holds an arbitrary msgpack value
    body = body_of()
    if place in ("schema", "kind", "header", "payload"):
        body[place] = value
    elif place == "payload map":
        body["payload"] = packed(value)
    elif place in ("dtype", "shape", "data"):
        array = wire_arrays.encode_array(WEIGHTS[0]) | {place: value}
        body["payload"] = packed({"weights": [array]})
    else:
        body["header"][place] = value
    # When it is decoded, then it either decodes or raises DecodeError
    with contextlib.suppress(DecodeError):
        wire.decode(packed(body))


ALLOWED = sorted(wire_arrays.ALLOWED_DTYPES)
WEIGHT_ARRAYS = st.lists(
    hnp.arrays(st.sampled_from(ALLOWED).map(np.dtype),
               hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
    max_size=4)
FINITE = st.floats(allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(WEIGHT_ARRAYS, st.text(max_size=20), st.text(max_size=20), st.integers(0, 2**63 - 1),
       st.integers(1, 2**31), FINITE, st.booleans(), st.dictionaries(st.text(max_size=10), FINITE))
def test_random_valid_weight_updates_round_trip_exactly(
        arrays: list[np.ndarray], update_id: str, worker_id: str, base_version: int,
        num_examples: int, train_seconds: float, is_delta: bool,
        metrics: dict[str, float]) -> None:
    # Given any well-formed update
    update = WeightUpdate(update_id=update_id, worker_id=worker_id, task_id="t",
                          base_version=base_version, num_examples=num_examples,
                          train_seconds=train_seconds, weights=tuple(arrays), is_delta=is_delta,
                          metrics=metrics)
    # When it round-trips, then it comes back exactly (arrays byte for byte)
    assert_same(wire.decode(wire.encode(update), expect=WeightUpdate), update)
