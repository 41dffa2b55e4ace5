"""Bodies of any size: framing a body as chunks, and a bounded reassembler. One place, both roles.

A body (already encoded, signed and sealed by common/codec.py: chunking changes nothing about
sealing) larger than `--chunk-bytes` travels as `count` messages. Each carries the slice of the
body in its AMQP body and, in its AMQP headers, the transfer id, its index, the count, the whole
body's size and the SHA-256 of the whole body. The receiver keeps the chunks in a `Store` (memory
for a worker's model, a durable spool on disk for the coordinator's updates: coordinator/spool.py)
and joins them only when all are present; the joined body must have the declared size and digest.

What a `Reassembler` refuses, with a reason (never a partial body): a malformed or inconsistent
chunk header, a whole body over `max_body_bytes`, more bytes than declared, a chunk index seen
before with different bytes, a digest that does not match, more than `max_partials` transfers in
progress, and a transfer without a new chunk for `expiry_seconds` (its sender died: `expire`).
A chunk seen before with the same bytes (the broker redelivers) and chunks of a transfer already
finished are `duplicate`s: ignored. Reordered chunks are placed by their index.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

TRANSFER = "x-fedmq-transfer"
INDEX = "x-fedmq-chunk"
COUNT = "x-fedmq-chunks"
TOTAL = "x-fedmq-body-bytes"
DIGEST = "x-fedmq-sha256"
TRANSFER_ID = re.compile(r"^[0-9a-f]{32}$")  # a uuid4 hex: also safe as a file name
CLOSED_KEPT = 4096  # finished transfer ids remembered, so late duplicates are recognised


class ChunkError(ValueError):
    """A chunk or a transfer refused; `reason` says why (logged, dead-lettered, counted)."""

    def __init__(self, reason: str, transfer_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transfer_id = transfer_id


@dataclass(frozen=True)
class ChunkHeader:
    """What every chunk of one transfer says about itself and about the whole body."""

    transfer_id: str
    index: int
    count: int
    total: int
    digest: str

    def fields(self) -> dict[str, Any]:
        return {TRANSFER: self.transfer_id, INDEX: self.index, COUNT: self.count,
                TOTAL: self.total, DIGEST: self.digest}

    def same_transfer(self, other: ChunkHeader) -> bool:
        return (self.count, self.total, self.digest) == (other.count, other.total, other.digest)


def digest(body: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(body).hexdigest()


def is_chunk(headers: Mapping[str, Any]) -> bool:
    return TRANSFER in headers


def parse(headers: Mapping[str, Any]) -> ChunkHeader:
    """The chunk header in AMQP `headers`; raises ChunkError if it is malformed."""
    transfer_id = headers.get(TRANSFER)
    if not isinstance(transfer_id, str) or not TRANSFER_ID.match(transfer_id):
        raise ChunkError(f"bad chunk transfer id {transfer_id!r}")
    index, count, total = headers.get(INDEX), headers.get(COUNT), headers.get(TOTAL)
    body_digest = headers.get(DIGEST)
    numbers_ok = all(type(n) is int for n in (index, count, total))
    if not numbers_ok or not 0 <= index < count or not count <= total:  # type: ignore[operator]
        raise ChunkError(f"bad chunk numbers: index {index!r} of {count!r}, {total!r} bytes",
                         transfer_id)
    if not isinstance(body_digest, str) or not re.match(r"^[0-9a-f]{64}$", body_digest):
        raise ChunkError(f"bad chunk digest {body_digest!r}", transfer_id)
    return ChunkHeader(transfer_id, int(index), int(count), int(total), body_digest)  # type: ignore[arg-type]


def split(body: bytes | bytearray, chunk_bytes: int, body_digest: str | None = None,
          ) -> Iterator[tuple[ChunkHeader, memoryview]]:
    """The chunks of `body` (slices, no copies), each with its header; a new transfer id.
    `body_digest`: the body's SHA-256 if already known (a model sent to many workers)."""
    view, transfer_id = memoryview(body), uuid.uuid4().hex
    body_digest = body_digest or digest(body)
    count = max(1, -(-len(body) // chunk_bytes))
    for index in range(count):
        yield (ChunkHeader(transfer_id, index, count, len(body), body_digest),
               view[index * chunk_bytes:(index + 1) * chunk_bytes])


def publish(send: Callable[..., None], body: bytes, chunk_bytes: int,
            body_digest: str | None = None) -> None:
    """Send `body` as one message if it fits in `chunk_bytes`, else as its chunks in order, each
    with its header: `send(part, headers=...)` publishes one (a broker's publish with the
    exchange, routing key and properties already bound)."""
    if len(body) <= chunk_bytes:
        send(body)
        return
    for header, part in split(body, chunk_bytes, body_digest):
        send(bytes(part), headers=header.fields())


def split_pieces(pieces: Sequence[bytes | memoryview], chunk_bytes: int, body_digest: str,
                 ) -> Iterator[tuple[ChunkHeader, bytes]]:
    """The chunks `split` makes of the body the pieces join into (common/wire.py's
    `encode_pieces`), without that body ever being whole: one chunk at a time is copied out.
    `body_digest`: `digest_pieces(pieces)`, computed once for a model sent to many workers."""
    views = [memoryview(piece).cast("B") for piece in pieces]
    total, transfer_id = sum(len(view) for view in views), uuid.uuid4().hex
    count = max(1, -(-total // chunk_bytes))
    for index in range(count):
        yield (ChunkHeader(transfer_id, index, count, total, body_digest),
               b"".join(_take(views, chunk_bytes)))


def _take(views: list[memoryview], size: int) -> Iterator[memoryview]:
    """Up to `size` bytes from the front of `views`, consumed as they are taken."""
    while size and views:
        taken = views[0][:size]
        views[0] = views[0][len(taken):]
        if not len(views[0]):
            views.pop(0)
        size -= len(taken)
        yield taken


def digest_pieces(pieces: Sequence[bytes | memoryview]) -> str:
    """`digest` of the body the pieces join into."""
    sha = hashlib.sha256()
    for piece in pieces:
        sha.update(piece)
    return sha.hexdigest()


class Store(Protocol):
    """Where the chunks of transfers in progress are kept (memory or a durable spool)."""

    def put(self, header: ChunkHeader, data: bytes) -> None: ...
    def get(self, transfer_id: str, index: int) -> bytes | None: ...
    def join(self, header: ChunkHeader) -> bytearray: ...
    def drop(self, transfer_id: str) -> None: ...


class MemoryStore:
    """Chunks in memory (a worker's model reply): the delivery bodies, joined once complete."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[int, bytes]] = {}

    def put(self, header: ChunkHeader, data: bytes) -> None:
        self.parts.setdefault(header.transfer_id, {})[header.index] = data

    def get(self, transfer_id: str, index: int) -> bytes | None:
        return self.parts.get(transfer_id, {}).get(index)

    def join(self, header: ChunkHeader) -> bytearray:
        parts = self.parts.pop(header.transfer_id, {})
        body = bytearray(header.total)
        offset = 0
        for index in range(header.count):
            part = parts.pop(index)
            body[offset:offset + len(part)] = part
            offset += len(part)
        return body

    def drop(self, transfer_id: str) -> None:
        self.parts.pop(transfer_id, None)


@dataclass
class Partial:
    """A transfer in progress: its header, the indices held, their bytes, its last chunk's time."""

    header: ChunkHeader
    received: set[int] = field(default_factory=set)
    size: int = 0
    last_seen: float = 0.0


@dataclass(frozen=True)
class Added:
    """What one chunk did: `partial`, `complete` (with the verified body), or `duplicate`."""

    status: Literal["partial", "complete", "duplicate"]
    transfer_id: str
    body: bytearray | None = None


class Reassembler:
    """Chunks in, whole verified bodies out; bounded in body size, transfers held and time."""

    def __init__(self, store: Store, *, max_body_bytes: int, max_partials: int,
                 expiry_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.max_body_bytes = max_body_bytes
        self.max_partials = max_partials
        self.expiry_seconds = expiry_seconds
        self.clock = clock
        self.partials: dict[str, Partial] = {}
        self.closed: OrderedDict[str, None] = OrderedDict()  # finished or refused transfers

    def recover(self, header: ChunkHeader, received: dict[int, int]) -> bytearray | None:
        """Take back a transfer found in a durable store (index -> size), as of now; its body
        if it is complete (raises ChunkError if that body must be refused)."""
        partial = Partial(header, set(received), sum(received.values()), self.clock())
        self.partials[header.transfer_id] = partial
        return self._join(partial) if len(partial.received) == header.count else None

    def add(self, header: ChunkHeader, data: bytes) -> Added:
        """Keep one chunk; raises ChunkError (the transfer is dropped) if it must be refused."""
        tid = header.transfer_id
        if tid in self.closed:
            return Added("duplicate", tid)
        partial = self.partials.get(tid)
        if partial is None:
            partial = self._open(header)
        elif not header.same_transfer(partial.header):
            self._refuse(tid, f"chunk {header.index} of transfer {tid} contradicts its first "
                              f"chunk (count, size or digest)")
        if header.index in partial.received:
            if self.store.get(tid, header.index) != bytes(data):
                self._refuse(tid, f"chunk {header.index} of transfer {tid} arrived twice with "
                                  f"different bytes")
            return Added("duplicate", tid)
        if partial.size + len(data) > header.total:
            self._refuse(tid, f"transfer {tid} sent more than the {header.total} bytes it "
                              f"declared")
        self.store.put(header, data)
        partial.received.add(header.index)
        partial.size += len(data)
        partial.last_seen = self.clock()
        if len(partial.received) < header.count:
            return Added("partial", tid)
        return Added("complete", tid, self._join(partial))

    def _open(self, header: ChunkHeader) -> Partial:
        tid = header.transfer_id
        if header.total > self.max_body_bytes:
            self._refuse(tid, f"transfer {tid} declares a body of {header.total} bytes, over "
                              f"--max-body-bytes ({self.max_body_bytes})")
        if len(self.partials) >= self.max_partials:
            self._refuse(tid, f"transfer {tid} refused: {len(self.partials)} partial transfers "
                              f"already held (the bound)")
        partial = self.partials[tid] = Partial(header, last_seen=self.clock())
        return partial

    def _join(self, partial: Partial) -> bytearray:
        header = partial.header
        if partial.size != header.total:
            self._refuse(header.transfer_id, f"transfer {header.transfer_id} has {partial.size} "
                                             f"bytes, it declared {header.total}")
        body = self.store.join(header)
        if digest(body) != header.digest:
            self._refuse(header.transfer_id, f"transfer {header.transfer_id} is corrupt: its "
                                             f"SHA-256 does not match the declared digest")
        del self.partials[header.transfer_id]
        self._close(header.transfer_id)
        return body

    def release(self, transfer_id: str) -> None:
        """The body of a complete transfer is safely handled: its chunks may go."""
        self.store.drop(transfer_id)

    def expire(self) -> list[ChunkError]:
        """Drop the transfers without a new chunk for `expiry_seconds`; one error each."""
        now, expired = self.clock(), []
        for tid, partial in list(self.partials.items()):
            if now - partial.last_seen > self.expiry_seconds:
                try:
                    self._refuse(tid, f"transfer {tid} incomplete: {len(partial.received)} of "
                                      f"{partial.header.count} chunks, none for "
                                      f"{self.expiry_seconds:.0f}s (sender gone?)")
                except ChunkError as exc:
                    expired.append(exc)
        return expired

    def _refuse(self, transfer_id: str, reason: str) -> None:
        self.partials.pop(transfer_id, None)
        self.store.drop(transfer_id)
        self._close(transfer_id)
        raise ChunkError(reason, transfer_id)

    def _close(self, transfer_id: str) -> None:
        self.closed[transfer_id] = None
        while len(self.closed) > CLOSED_KEPT:
            self.closed.popitem(last=False)
