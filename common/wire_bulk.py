"""The wire format's bulk path (part of common/wire.py): msgpack with large binaries, without
copying them more than once.

`pack` writes the same bytes as `msgpack.packb(value, use_bin_type=True)` for the values
messages hold (maps, lists, text, numbers, None, booleans, bytes, memoryviews), but as a list of
pieces joined once at the end: an array's memory is copied once, into the message, instead of
three times (`tobytes`, the payload, the envelope). `unpack` reads what `msgpack.unpackb(raw=False,
strict_map_key=True)` reads, except that a binary of `SPAN_MIN` bytes or more comes back as a
`Span` of the source (no copy; `np.frombuffer(span.source, offset=...)`); anything malformed,
truncated, too deep, followed by extra bytes, or using an extension type raises `DecodeError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from common.errors import DecodeError

SPAN_MIN = 4096
MAX_DEPTH = 32


@dataclass(frozen=True)
class Span:
    """`length` bytes of `source` from `offset`: a binary left where it lies."""

    source: bytes | bytearray
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length


class Timestamp:
    """A msgpack timestamp (extension -1) read but not interpreted: no field's type accepts it."""


def _header(value: int, tiny: int, tiny_max: int, codes: tuple[int, int]) -> bytes:
    if value < tiny_max:
        return bytes([tiny | value])
    if value < 1 << 16:
        return struct.pack(">BH", codes[0], value)
    return struct.pack(">BI", codes[1], value)


def bin_header(length: int) -> bytes:
    if length < 1 << 8:
        return struct.pack(">BB", 0xC4, length)
    if length < 1 << 16:
        return struct.pack(">BH", 0xC5, length)
    return struct.pack(">BI", 0xC6, length)


def _pieces(value: Any, out: list[bytes | memoryview]) -> None:
    if isinstance(value, dict):
        out.append(_header(len(value), 0x80, 16, (0xDE, 0xDF)))
        for key, item in value.items():
            out.append(msgpack.packb(key, use_bin_type=True))
            _pieces(item, out)
    elif isinstance(value, list):
        out.append(_header(len(value), 0x90, 16, (0xDC, 0xDD)))
        for item in value:
            _pieces(item, out)
    elif isinstance(value, memoryview):
        out += [bin_header(value.nbytes), value]
    else:
        out.append(msgpack.packb(value, use_bin_type=True))


def pieces(value: Any) -> list[bytes | memoryview]:
    """`value` packed as pieces whose concatenation is its msgpack encoding."""
    out: list[bytes | memoryview] = []
    _pieces(value, out)
    return out


def pack(value: Any) -> bytes:
    return b"".join(pieces(value))


# ---------------------------------------------------------------- reading

_FIXED = {0xC0: None, 0xC2: False, 0xC3: True}
_NUMBERS = {0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
            0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q"}
_LENGTHS = {0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I",
            0xDC: ">H", 0xDD: ">I", 0xDE: ">H", 0xDF: ">I"}

_EXT: dict[int, int | str] = {0xC7: ">B", 0xC8: ">H", 0xC9: ">I", 0xD4: 1, 0xD5: 2, 0xD6: 4,
                              0xD7: 8, 0xD8: 16}


class _Reader:
    def __init__(self, source: bytes | bytearray) -> None:
        self.source, self.view, self.pos = source, memoryview(source), 0

    def take(self, n: int) -> memoryview:
        if n > len(self.view) - self.pos:
            raise DecodeError("msgpack data is truncated")
        piece = self.view[self.pos:self.pos + n]
        self.pos += n
        return piece

    def number(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise DecodeError("msgpack data is nested too deeply")
        code = self.take(1)[0]
        if code <= 0x7F or code >= 0xE0:
            return code if code <= 0x7F else code - 0x100
        if 0x80 <= code <= 0x8F:
            return self.map(code & 0x0F, depth)
        if 0x90 <= code <= 0x9F:
            return [self.value(depth + 1) for _ in range(code & 0x0F)]
        if 0xA0 <= code <= 0xBF:
            return self.text(code & 0x1F)
        if code in _FIXED:
            return _FIXED[code]
        if code in _NUMBERS:
            return self.number(_NUMBERS[code])
        if code in _EXT:
            size = _EXT[code] if isinstance(_EXT[code], int) else self.number(str(_EXT[code]))
            kind = self.number(">b")
            self.take(int(size))
            if kind == -1:  # msgpack's own timestamps: a value no field accepts (as msgpack's)
                return Timestamp()
            raise DecodeError(f"msgpack extension type {kind} is not allowed")
        if code not in _LENGTHS:  # 0xc1: never used
            raise DecodeError(f"msgpack type 0x{code:02x} is not allowed")
        length = self.number(_LENGTHS[code])
        if code <= 0xC6:
            return self.binary(length)
        if code <= 0xDB:
            return self.text(length)
        if code <= 0xDD:
            return [self.value(depth + 1) for _ in range(length)]
        return self.map(length, depth)

    def binary(self, length: int) -> bytes | Span:
        start = self.pos
        piece = self.take(length)
        return Span(self.source, start, length) if length >= SPAN_MIN else bytes(piece)

    def text(self, length: int) -> str:
        try:
            return str(self.take(length), "utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"msgpack text is not UTF-8: {exc}") from None

    def map(self, length: int, depth: int) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for _ in range(length):
            key = self.value(depth + 1)
            if not isinstance(key, str | bytes):
                raise DecodeError(f"msgpack map key of type {type(key).__name__} is not allowed")
            out[key] = self.value(depth + 1)
        return out


def unpack(source: bytes | bytearray | Span) -> Any:
    """The value `source` (or the part of a source a span covers) holds, see the module's
    docstring; DecodeError if it is malformed."""
    span = source if isinstance(source, Span) else Span(source, 0, len(source))
    reader = _Reader(span.source)
    reader.pos, end = span.offset, span.offset + span.length
    reader.view = reader.view[:end]
    value = reader.value(0)
    if reader.pos != end:
        raise DecodeError(f"{end - reader.pos} extra bytes after the msgpack data")
    return value
