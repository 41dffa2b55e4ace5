"""Bodies of any size (issue 15): framing, and a reassembler that refuses rather than guesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common import chunks
from common.chunks import ChunkError, ChunkHeader, MemoryStore, Reassembler
from coordinator.spool import Spool


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def reassembler(max_body: int = 10_000, max_partials: int = 4,
                clock: Clock | None = None) -> Reassembler:
    return Reassembler(MemoryStore(), max_body_bytes=max_body, max_partials=max_partials,
                       expiry_seconds=30, clock=clock or Clock())


def pieces(body: bytes, size: int = 100) -> list[tuple[ChunkHeader, bytes]]:
    return [(header, bytes(part)) for header, part in chunks.split(body, size)]


BODY = os.urandom(1050)


def test_split_then_join_in_order_gives_the_body() -> None:
    parts = pieces(BODY)
    assert len(parts) == 11 and {h.transfer_id for h, _ in parts} == {parts[0][0].transfer_id}
    r = reassembler()
    results = [r.add(h, d) for h, d in parts]
    assert [a.status for a in results] == ["partial"] * 10 + ["complete"]
    assert results[-1].body == BODY
    assert not r.partials


def test_headers_round_trip_and_malformed_headers_are_refused() -> None:
    header, _ = pieces(BODY)[3]
    assert chunks.parse(header.fields()) == header
    for bad in ({**header.fields(), chunks.INDEX: 11}, {**header.fields(), chunks.TRANSFER: "../x"},
                {**header.fields(), chunks.DIGEST: "zz"}, {**header.fields(), chunks.COUNT: "2"}):
        with pytest.raises(ChunkError):
            chunks.parse(bad)


def test_reordered_chunks_are_placed_by_index() -> None:
    r = reassembler()
    parts = pieces(BODY)
    results = [r.add(h, d) for h, d in reversed(parts)]
    assert results[-1].body == BODY


def test_a_redelivered_chunk_is_a_duplicate_but_different_bytes_refuse_the_transfer() -> None:
    r = reassembler()
    parts = pieces(BODY)
    r.add(*parts[0])
    assert r.add(*parts[0]).status == "duplicate"
    with pytest.raises(ChunkError, match="twice with different bytes"):
        r.add(parts[0][0], b"x" * 100)
    assert not r.partials  # dropped, and later chunks of it are ignored, never applied
    assert all(r.add(h, d).status == "duplicate" for h, d in parts[1:])


def test_a_corrupt_chunk_fails_the_digest_and_nothing_is_returned() -> None:
    r = reassembler()
    parts = pieces(BODY)
    parts[5] = (parts[5][0], b"\0" * 100)
    with pytest.raises(ChunkError, match="corrupt"):
        for header, data in parts:
            r.add(header, data)
    assert not r.partials


def test_a_chunk_contradicting_its_transfer_or_its_size_is_refused() -> None:
    r = reassembler()
    parts = pieces(BODY)
    r.add(*parts[0])
    forged = ChunkHeader(parts[1][0].transfer_id, 1, 11, 1050, "0" * 64)
    with pytest.raises(ChunkError, match="contradicts"):
        r.add(forged, parts[1][1])
    r2 = reassembler()
    r2.add(*parts[0])
    with pytest.raises(ChunkError, match="more than the 1050 bytes"):
        r2.add(parts[1][0], b"x" * 2000)


def test_a_missing_chunk_expires_with_a_reason() -> None:
    clock = Clock()
    r = reassembler(clock=clock)
    parts = pieces(BODY)
    for header, data in parts[:-1]:
        r.add(header, data)
    clock.now = 10
    assert r.expire() == []
    clock.now = 45
    [expired] = r.expire()
    assert "10 of 11 chunks" in expired.reason and expired.transfer_id == parts[0][0].transfer_id
    assert not r.partials
    assert r.add(*parts[-1]).status == "duplicate"  # too late: never a partial body


def test_bounds_on_body_size_and_partial_transfers() -> None:
    with pytest.raises(ChunkError, match="--max-body-bytes"):
        reassembler(max_body=1000).add(*pieces(BODY)[0])
    r = reassembler(max_partials=2)
    r.add(*pieces(BODY)[0])
    r.add(*pieces(BODY)[0])
    with pytest.raises(ChunkError, match="2 partial transfers already held"):
        r.add(*pieces(BODY)[0])


def test_a_small_body_is_one_chunk() -> None:
    [(header, data)] = pieces(b"abc")
    assert (header.count, header.total, data) == (1, 3, b"abc")
    assert reassembler().add(header, data).body == b"abc"


@pytest.mark.parametrize("chunk_bytes", [1, 7, 100, 250, 10_000])
def test_chunks_of_pieces_are_the_chunks_of_the_joined_body(chunk_bytes: int) -> None:
    # Given a body given as pieces of uneven sizes (an empty one among them), as
    # wire.encode_pieces gives a model
    buffers: list[bytes | memoryview] = [b"head", memoryview(os.urandom(123)), b"",
                                         memoryview(os.urandom(127)), b"x"]
    body = b"".join(buffers)
    # When it is split from the pieces, with the digest of the pieces
    digest = chunks.digest_pieces(buffers)
    split = list(chunks.split_pieces(buffers, chunk_bytes, digest))
    # Then the chunks and headers are those of the joined body (but for the transfer id)
    expected = list(chunks.split(body, chunk_bytes))
    assert digest == chunks.digest(body)
    assert [part for _, part in split] == [bytes(part) for _, part in expected]
    assert [(h.index, h.count, h.total, h.digest) for h, _ in split] == [
        (h.index, h.count, h.total, h.digest) for h, _ in expected]
    assert len({h.transfer_id for h, _ in split}) == 1


def spool(root: Path) -> Spool:
    return Spool(root, max_body_bytes=10_000, max_partials=4, expiry_seconds=30)


def test_the_spool_survives_a_crash_mid_transfer(tmp_path: Path) -> None:
    # Given a spool that took 6 of 11 chunks, then its process died
    parts = pieces(BODY)
    first = spool(tmp_path)
    for header, data in parts[:6]:
        first.reassembler.add(header, data)
    first.store.written(wait=True)  # (on disk: their deliveries were acked)
    # When a new process recovers it and the unacked chunks are redelivered (one twice)
    second = spool(tmp_path)
    assert second.recover() == []
    results = [second.reassembler.add(h, d) for h, d in parts[5:]]
    # Then the body is whole, once
    assert results[0].status == "duplicate" and results[-1].body == BODY


def test_a_complete_spooled_transfer_is_handed_out_once_then_tombstoned(tmp_path: Path) -> None:
    parts = pieces(BODY)
    first = spool(tmp_path)
    for header, data in parts:
        added = first.reassembler.add(header, data)
    first.handled(added.transfer_id)  # judged, but the process died before its checkpoint
    first.store.written(wait=True)
    second = spool(tmp_path)
    [(transfer_id, body)] = second.recover()
    assert body == BODY
    second.handled(transfer_id)
    second.saved()  # checkpoint written: chunks go, a tombstone stays for the last ack
    second.store.written(wait=True)
    third = spool(tmp_path)
    assert third.recover() == []
    assert third.reassembler.add(*parts[-1]).status == "duplicate"
    third.saved()
    assert not list(tmp_path.glob("*/*.chunk"))


def test_publish_sends_a_small_body_whole_and_a_large_one_as_its_chunks_in_order() -> None:
    sent: list[tuple[bytes, dict[str, object]]] = []

    def send(part: bytes, headers: dict[str, object] | None = None) -> None:
        sent.append((part, headers or {}))

    # A body that fits goes as one message, without chunk headers
    chunks.publish(send, b"x" * 10, 10)
    assert sent == [(b"x" * 10, {})]
    # A larger one goes as its chunks, in order, each with the whole body's header
    sent.clear()
    body = bytes(range(256)) * 3
    chunks.publish(send, body, 100)
    headers = [chunks.parse(h) for _, h in sent]
    assert [h.index for h in headers] == list(range(8)) and headers[0].count == 8
    assert b"".join(part for part, _ in sent) == body
    assert all(h.total == len(body) and h.digest == chunks.digest(body) for h in headers)
