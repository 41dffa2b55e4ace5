"""The wire format: msgpack envelopes with a schema number, a kind, header fields and payload bytes.

The only module that imports msgpack (with its bulk path, common/wire_bulk.py). Roles do not
call it directly: common/codec.py chooses plain or sealed messages for them.

Never pickle: a pickled body can run arbitrary code on the coordinator, and updates come from other
organisations. Arrays travel as {dtype, shape, data} with an allowlist of plain numeric dtypes and
are decoded with `np.frombuffer` (zero copy, read-only): common/wire_arrays.py. Every failure
raises `DecodeError` with a reason that can be logged and attached to the dead-lettered message.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from common import wire_bulk
from common.errors import DecodeError
from common.messages import MESSAGE_TYPES, Message
from common.wire_arrays import decode_array, encode_array
from common.wire_bulk import Span

SCHEMA = 1
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Envelope:
    """Header fields in the clear, payload as opaque bytes (which a sealing layer may encrypt)."""

    kind: str
    header: dict[str, Any]
    payload: bytes
    schema: int = SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str | None:
        """The task its clear header names, if any (for bookkeeping, e.g. of a rejection)."""
        task_id = self.header.get("task_id")
        return task_id if isinstance(task_id, str) else None


# ---------------------------------------------------------------- envelopes

def pack_envelope(envelope: Envelope) -> bytes:
    body = {"schema": envelope.schema, "kind": envelope.kind, "header": envelope.header,
            "payload": envelope.payload, **envelope.extra}
    return msgpack.packb(body, use_bin_type=True)


def _check_body(data: bytes | bytearray, max_bytes: int, what: str) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"{what} must be bytes")
    if len(data) > max_bytes:
        raise DecodeError(f"{what} of {len(data)} bytes exceeds the limit of {max_bytes}")


def _unpack(data: bytes | bytearray, max_bytes: int, what: str) -> Any:
    _check_body(data, max_bytes, what)
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                               ext_hook=_refuse_ext)
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise DecodeError(f"{what} is not valid msgpack: {type(exc).__name__}: {exc}") from None


def _unpack_payload(data: bytes | Span, max_bytes: int) -> Any:
    """A payload: like `_unpack`, but large binaries stay where they lie (wire_bulk.Span)."""
    if len(data) > max_bytes:
        raise DecodeError(f"payload of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return wire_bulk.unpack(data if isinstance(data, Span) else bytes(data))
    except DecodeError as exc:
        raise DecodeError(f"payload is not valid msgpack: {exc}") from None


def _refuse_ext(code: int, data: bytes) -> None:
    raise DecodeError(f"msgpack extension type {code} is not allowed")


def unpack_envelope(body: bytes | bytearray, max_bytes: int = DEFAULT_MAX_BYTES) -> Envelope:
    """Parse the outer envelope; the payload stays opaque bytes."""
    return _envelope(_unpack(body, max_bytes, "message body"))[0]


def _unpack_in_place(body: bytes | bytearray, max_bytes: int) -> tuple[Envelope, bytes | Span]:
    """`unpack_envelope`, with a large payload left in the body (a Span) instead of copied;
    the envelope's own `payload` is then empty."""
    _check_body(body, max_bytes, "message body")
    try:
        obj = wire_bulk.unpack(body if isinstance(body, bytes | bytearray) else bytes(body))
    except DecodeError as exc:
        raise DecodeError(f"message body is not valid msgpack: {exc}") from None
    return _envelope(obj)


def _envelope(obj: Any) -> tuple[Envelope, bytes | Span]:
    """The envelope of a parsed body, and its payload."""
    if not isinstance(obj, dict):
        raise DecodeError("message body must be a map")
    schema, kind = obj.pop("schema", None), obj.pop("kind", None)
    if type(schema) is not int or schema != SCHEMA:
        raise DecodeError(f"unknown schema {schema!r} (this build speaks schema {SCHEMA})")
    if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
        raise DecodeError(f"unknown message kind {kind!r}")
    header, payload = obj.pop("header", None), obj.pop("payload", None)
    if not isinstance(header, dict) or not isinstance(payload, bytes | Span):
        raise DecodeError("envelope needs a header map and payload bytes")
    if not all(isinstance(key, str) for key in header):
        raise DecodeError(f"{kind}: header field names must be text")
    return Envelope(kind=kind, header=header, payload=payload if isinstance(payload, bytes)
                    else b"", schema=schema, extra=obj), payload


# ---------------------------------------------------------------- messages

def to_envelope(message: Message) -> Envelope:
    """Split a message into clear header fields and packed payload bytes."""
    header, payload = _split(message)
    return Envelope(kind=message.KIND, header=header, payload=wire_bulk.pack(payload))


def _split(message: Message) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload fields for msgpack; an optional payload field left empty is not sent
    (an uncompressed update is byte for byte what it was before compression existed)."""
    values = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    payload = {name: values.pop(name) for name in message.PAYLOAD}
    return ({name: _to_wire(value) for name, value in values.items()},
            {name: _to_wire(value) for name, value in payload.items()
             if value != () or name not in _optional(type(message))})


def _optional(cls: type[Message]) -> frozenset[str]:  # payload fields whose default is ()
    return _fields_of(cls).optional


@dataclass(frozen=True)
class _Fields:
    """What decoding checks a message class against: its field types, names, required fields
    and optional payload fields."""

    hints: dict[str, Any]
    names: frozenset[str]
    required: frozenset[str]
    optional: frozenset[str]


_FIELDS: dict[type[Message], _Fields] = {}


def _fields_of(cls: type[Message]) -> _Fields:
    """Once per class: `typing.get_type_hints` evaluates every annotation anew on each call,
    which was 4 % of the coordinator's loop at 4 MB (`fedmq bench scale`)."""
    known = _FIELDS.get(cls)
    if known is None:
        fields = dataclasses.fields(cls)
        known = _FIELDS[cls] = _Fields(
            typing.get_type_hints(cls), frozenset(f.name for f in fields),
            frozenset(f.name for f in fields if f.default is dataclasses.MISSING
                      and f.default_factory is dataclasses.MISSING),
            frozenset(f.name for f in fields if f.default == () and f.name in cls.PAYLOAD))
    return known


def from_envelope(envelope: Envelope, max_bytes: int = DEFAULT_MAX_BYTES,
                  carried: bytes | Span | None = None) -> Message:
    """Rebuild and type-check the message an envelope carries (its payload, or `carried`)."""
    cls = MESSAGE_TYPES[envelope.kind]
    payload = _unpack_payload(envelope.payload if carried is None else carried, max_bytes)
    needed = [name for name in cls.PAYLOAD if name not in _optional(cls)]
    if not isinstance(payload, dict) or not set(needed) <= set(payload) <= set(cls.PAYLOAD):
        raise DecodeError(f"{envelope.kind} payload must hold exactly {needed}, and may hold "
                          f"{sorted(_optional(cls))}")
    if set(envelope.header) & set(cls.PAYLOAD):
        raise DecodeError(f"{envelope.kind}: payload fields repeated in the header: "
                          f"{sorted(set(envelope.header) & set(cls.PAYLOAD))}")
    values = {**envelope.header, **payload}
    fields = _fields_of(cls)
    hints = fields.hints
    unknown, missing = set(values) - fields.names, fields.required - set(values)
    if unknown or missing:
        raise DecodeError(f"{envelope.kind}: unknown fields {sorted(unknown)}, "
                          f"missing fields {sorted(missing)}")
    checked = {name: _from_wire(value, hints[name], f"{envelope.kind}.{name}")
               for name, value in values.items()}
    return typing.cast(Message, cls(**checked))


def encode(message: Message) -> bytes:
    """Message to bytes for the broker: `pack_envelope(to_envelope(message))`, byte for byte,
    with the arrays' memory copied once (into the body) instead of through a payload first."""
    return b"".join(encode_pieces(message))


def encode_pieces(message: Message) -> list[bytes | memoryview]:
    """`encode(message)` before it is joined: small pieces and views of the arrays' memory (no
    copy), to be sent in chunks without the whole body ever being in memory (the arrays must
    not change while the pieces are in use)."""
    header, fields = _split(message)
    payload = wire_bulk.pieces(fields)
    head = {"schema": SCHEMA, "kind": message.KIND, "header": header, "payload": b""}
    prefix = msgpack.packb(head, use_bin_type=True)[:-2]  # without the empty payload's c4 00
    size = sum(piece.nbytes if isinstance(piece, memoryview) else len(piece) for piece in payload)
    return [prefix, wire_bulk.bin_header(size), *payload]


def decode(body: bytes | bytearray, expect: type[T] | None = None,
           max_bytes: int = DEFAULT_MAX_BYTES) -> T:
    """Bytes from the broker to a message, optionally insisting on one message class. The
    arrays of a large message are read-only views of `body` (no copy at all). A DecodeError
    raised once the envelope is read carries the task id its header names."""
    envelope, payload = _unpack_in_place(body, max_bytes)
    try:
        return expect_kind(from_envelope(envelope, max_bytes, payload), expect)
    except DecodeError as exc:
        exc.task_id = envelope.task_id
        raise


def expect_kind(message: Message, expect: type[T] | None) -> T:
    if expect is not None and not isinstance(message, expect):
        raise DecodeError(f"expected {expect.KIND}, got {message.KIND}")  # type: ignore[attr-defined]
    return typing.cast(T, message)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def seal_context(envelope: Envelope) -> bytes:
    """The bytes a seal signs and binds besides the payload: schema, kind and sorted header."""
    return msgpack.packb([envelope.schema, envelope.kind, _canonical(envelope.header)],
                         use_bin_type=True)


def _to_wire(value: Any) -> Any:
    if isinstance(value, tuple):
        return [encode_array(v) for v in value]
    return value


def _from_wire(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field's type hint; returns the typed value."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _from_wire(value, option, where)
            except DecodeError:
                continue
        raise DecodeError(f"{where}: {type(value).__name__} is not {hint}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool or hint is str or hint is bytes:
        if type(value) is hint:
            return value
    elif hint is int:
        if type(value) is int:
            return value
    elif hint is float:
        if type(value) in (int, float):
            return float(value)
    elif origin is typing.Literal:  # a choice among names (a compression method)
        if any(type(value) is type(choice) and value == choice for choice in args):
            return value
    elif origin is tuple:  # a model's or update's arrays
        if isinstance(value, list):
            return tuple(decode_array(item) for item in value)
    elif origin is dict:
        if isinstance(value, dict):
            return {_from_wire(k, args[0], where): _from_wire(v, args[1], where)
                    for k, v in value.items()}
    else:
        raise DecodeError(f"{where}: unsupported field type {hint}")
    raise DecodeError(f"{where}: {type(value).__name__} is not {getattr(hint, '__name__', hint)}")
