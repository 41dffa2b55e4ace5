"""The wire codec: round trips, zero-copy decoding, and a clear DecodeError for every bad body."""

from __future__ import annotations

import contextlib
import dataclasses

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from common import wire
from common.errors import DecodeError
from common.messages import Event, GlobalModel, ModelRequest, TrainTask, WeightUpdate

WEIGHTS = (np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(3, dtype=np.float32))
MESSAGES = [
    TrainTask(task_id="t1", job="j", min_version=3, local_epochs=2, batch_size=8,
              learning_rate=0.25),
    WeightUpdate(update_id="u1", worker_id="w1", task_id="t1", base_version=2, num_examples=40,
                 train_seconds=0.5, weights=WEIGHTS, is_delta=True, metrics={"loss": 0.3}),
    GlobalModel(version=7, fingerprint="abc", weights=WEIGHTS),
    ModelRequest(worker_id="w1", have_version=4),
    Event(name="version", job="j", fields={"version": 3, "loss": 0.5, "who": "w", "x": None}),
]


def update_body(**header: object) -> dict[str, object]:
    envelope = wire.to_envelope(MESSAGES[1])
    return {"schema": envelope.schema, "kind": envelope.kind,
            "header": envelope.header | header, "payload": envelope.payload}


def packed(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def assert_same(a: object, b: object) -> None:
    assert type(a) is type(b)
    for field in dataclasses.fields(a):  # type: ignore[arg-type]
        left, right = getattr(a, field.name), getattr(b, field.name)
        if isinstance(left, tuple):
            assert len(left) == len(right)
            for x, y in zip(left, right, strict=True):
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        else:
            assert left == right


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.KIND)
def test_every_message_kind_round_trips(message: object) -> None:
    # Given a message, when it is encoded and decoded, then every field comes back the same
    assert_same(wire.decode(wire.encode(message)), message)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", sorted(wire.ALLOWED_DTYPES))
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 0, 4), (2, 3, 4)])
def test_every_allowed_dtype_and_shape_round_trips(dtype: str, shape: tuple[int, ...]) -> None:
    # Given an array of an allowed dtype
    array = (np.arange(int(np.prod(shape))) % 7).astype(dtype).reshape(shape)
    # When it goes through the codec
    decoded = wire.decode_array(msgpack.unpackb(packed(wire.encode_array(array))))
    # Then dtype, shape and values are preserved
    assert decoded.dtype == array.dtype and decoded.shape == shape
    assert np.array_equal(decoded, array)


def test_big_endian_arrays_are_sent_little_endian() -> None:
    array = np.arange(4, dtype=">f4")
    encoded = wire.encode_array(array)
    assert encoded["dtype"] == "<f4"
    assert np.array_equal(wire.decode_array(encoded), array)


def test_decoded_arrays_are_zero_copy_and_read_only() -> None:
    # Given a decoded global model
    model = wire.decode(wire.encode(MESSAGES[2]), GlobalModel)
    # Then its arrays are views on the message bytes, not copies, and cannot be modified
    for array in model.weights:
        assert not array.flags.writeable
        owner = array
        while isinstance(owner, np.ndarray):
            owner = owner.base
        assert isinstance(owner, bytes)


@pytest.mark.parametrize("dtype", ["|O", "|V8", "<c8", "<c16", "|b1", "<M8[s]", "<U3", "|S3",
                                   ">f4", ">i8", "float32", "<f16"])
def test_disallowed_dtypes_on_the_wire_are_rejected(dtype: str) -> None:
    bad = {"dtype": dtype, "shape": [1], "data": b"\x00" * 16}
    with pytest.raises(DecodeError, match="not allowed"):
        wire.decode_array(bad)


@pytest.mark.parametrize("array", [np.array([object()]), np.array([1 + 2j]),
                                   np.array([True]), np.array(["x"])])
def test_disallowed_dtypes_are_refused_when_encoding(array: np.ndarray) -> None:
    with pytest.raises(DecodeError, match="not allowed"):
        wire.encode_array(array)


@pytest.mark.parametrize(("array", "reason"), [
    ({"dtype": "<f4", "shape": [3], "data": b"\x00" * 8}, "needs 12"),
    ({"dtype": "<f4", "shape": [-1], "data": b""}, "bad array shape"),
    ({"dtype": "<f4", "shape": [1.5], "data": b"\x00" * 4}, "bad array shape"),
    ({"dtype": "<f4", "shape": [1] * 9, "data": b"\x00" * 4}, "bad array shape"),
    ({"dtype": "<f4", "shape": [1], "data": "abcd"}, "must be bytes"),
    ({"dtype": "<f4", "shape": [1]}, "exactly dtype, shape and data"),
    ([1, 2, 3], "exactly dtype, shape and data"),
])
def test_malformed_arrays_are_rejected(array: object, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        wire.decode_array(array)


BAD_BODIES = {
    "not msgpack": (b"\xc1\xc1\xc1", "not valid msgpack"),
    "truncated": (wire.encode(MESSAGES[1])[:-7], "not valid msgpack"),
    "not a map": (packed([1, 2, 3]), "must be a map"),
    "unknown schema": (packed(update_body() | {"schema": 2}), "unknown schema"),
    "no schema": (packed({k: v for k, v in update_body().items() if k != "schema"}),
                  "unknown schema"),
    "unknown kind": (packed(update_body() | {"kind": "pickle"}), "unknown message kind"),
    "missing field": (packed(update_body() | {"header": {"update_id": "u"}}), "missing fields"),
    "extra field": (packed(update_body(surprise=1)), "unknown fields"),
    "bool for int": (packed(update_body(base_version=True)), "base_version"),
    "str for float": (packed(update_body(train_seconds="fast")), "train_seconds"),
    "float for int": (packed(update_body(num_examples=1.5)), "num_examples"),
    "payload not bytes": (packed(update_body() | {"payload": "text"}), "payload bytes"),
    "payload not msgpack": (packed(update_body() | {"payload": b"\xc1"}), "not valid msgpack"),
    "ext type": (packed(msgpack.ExtType(5, b"x")), "extension type"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_malformed_bodies_raise_decode_error_with_a_reason(case: str) -> None:
    body, reason = BAD_BODIES[case]
    with pytest.raises(DecodeError, match=reason):
        wire.decode(body)


def test_bodies_over_the_limit_are_rejected_before_parsing() -> None:
    body = wire.encode(MESSAGES[2])
    with pytest.raises(DecodeError, match="exceeds the limit"):
        wire.decode(body, max_bytes=len(body) - 1)


def test_expecting_one_kind_rejects_another() -> None:
    with pytest.raises(DecodeError, match="expected weight_update"):
        wire.decode(wire.encode(MESSAGES[0]), WeightUpdate)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_only_ever_raise_decode_error(body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        wire.decode(body)


@settings(max_examples=60, deadline=None)
@given(st.lists(hnp.arrays(st.sampled_from([np.float32, np.float64, np.int32, np.uint8]),
                           hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)), max_size=4),
       st.integers(0, 2**40), st.text(max_size=20), st.booleans())
def test_random_valid_updates_round_trip(arrays: list[np.ndarray], version: int, worker: str,
                                         is_delta: bool) -> None:
    update = WeightUpdate(update_id="u", worker_id=worker, task_id="t", base_version=version,
                          num_examples=1, train_seconds=0.0, weights=tuple(arrays),
                          is_delta=is_delta)
    assert_same(wire.decode(wire.encode(update), WeightUpdate), update)
