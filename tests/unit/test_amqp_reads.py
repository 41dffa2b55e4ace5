"""common/amqp_reads.py: pika's frame reader, cutting frames at an offset, gives pika exactly the
frames pika's own reader gives, whatever the reads, and costs no more than decoding them."""

from __future__ import annotations

import gc
import random
import time
from typing import Any

import pika.connection
import pytest
from pika import frame, spec

from common import amqp_reads

ORIGINAL = amqp_reads.PIKA_READER  # taken before common/amqp.py installs the new one


class Reader:
    """The part of a pika Connection that a frame reader touches."""

    def __init__(self) -> None:
        self._frame_buffer = b""
        self.bytes_received = 0
        self.frames: list[Any] = []

    def _process_frame(self, value: Any) -> None:
        self.frames.append(value)

    def _read_frame(self) -> Any:  # pika's own reader calls this
        return frame.decode_frame(self._frame_buffer)

    def _trim_frame_buffer(self, count: int) -> None:  # and this
        self._frame_buffer = self._frame_buffer[count:]
        self.bytes_received += count


def stream(rng: random.Random, count: int) -> bytes:
    """`count` deliveries: a method frame, a header frame and body frames of random sizes."""
    parts = []
    for tag in range(1, count + 1):
        body = rng.randbytes(rng.choice([0, 1, 100, 5000, 131064]))
        parts.append(frame.Method(1, spec.Basic.Deliver("ctag", tag, False, "", "q")).marshal())
        parts.append(frame.Header(1, len(body), spec.BasicProperties(headers={"i": tag})).marshal())
        if body:
            parts.append(frame.Body(1, body).marshal())
        if rng.random() < 0.1:
            parts.append(frame.Heartbeat().marshal())
    return b"".join(parts)


def described(value: Any) -> tuple[Any, ...]:
    if isinstance(value, frame.Body):
        return ("body", value.channel_number, bytes(value.fragment))
    if isinstance(value, frame.Header):
        return ("header", value.body_size, value.properties.headers)
    if isinstance(value, frame.Method):
        return ("method", value.method.NAME, getattr(value.method, "delivery_tag", None))
    return (type(value).__name__,)


def read(reader_fn: Any, data: bytes, cuts: list[int]) -> Reader:
    reader = Reader()
    start = 0
    for cut in [*cuts, len(data)]:
        reader_fn(reader, data[start:cut])
        start = cut
    return reader


def test_the_comparison_is_with_pikas_own_reader() -> None:
    assert ORIGINAL is not amqp_reads.on_data_available
    assert ORIGINAL.__module__ == "pika.connection"


def test_the_same_frames_as_pikas_reader_whatever_the_reads() -> None:
    rng = random.Random(7)
    data = stream(rng, 60)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.choice([1, 10, 300])))
        mine, pikas = read(amqp_reads.on_data_available, data, cuts), read(ORIGINAL, data, cuts)
        assert [described(f) for f in mine.frames] == [described(f) for f in pikas.frames]
        assert mine.bytes_received == pikas.bytes_received == len(data)
        assert mine._frame_buffer == pikas._frame_buffer == b""


def test_an_incomplete_frame_waits_for_the_rest() -> None:
    data = frame.Body(1, b"x" * 1000).marshal()
    reader = read(amqp_reads.on_data_available, data[:500], [])
    assert reader.frames == [] and reader._frame_buffer == data[:500]
    amqp_reads.on_data_available(reader, data[500:])
    assert [described(f) for f in reader.frames] == [("body", 1, b"x" * 1000)]


def test_a_frame_that_resets_the_connection_ends_the_read_as_in_pika() -> None:
    # pika's Connection re-initialises its state (an empty frame buffer) when it closes: the
    # frames after that one in the same read are not processed, and nothing is put back
    data = stream(random.Random(3), 5)

    class Resetting(Reader):
        def _process_frame(self, value: Any) -> None:
            super()._process_frame(value)
            if len(self.frames) == 4:
                self._frame_buffer = b""

    def run(reader_fn: Any) -> Resetting:
        reader = Resetting()
        reader_fn(reader, data)
        return reader

    mine, pikas = run(amqp_reads.on_data_available), run(ORIGINAL)
    assert len(mine.frames) == len(pikas.frames) == 4
    assert mine._frame_buffer == pikas._frame_buffer == b""


def outcome(reader_fn: Any, reader: Reader, data: bytes, cuts: list[int]) -> tuple[Any, ...]:
    """What a reader made of `data` read in pieces: frames, count, leftover, the error raised."""
    error, start = None, 0
    try:
        for cut in [*cuts, len(data)]:
            reader_fn(reader, data[start:cut])
            start = cut
    except Exception as exc:
        error = type(exc)
    return [described(f) for f in reader.frames], reader.bytes_received, \
        reader._frame_buffer, error


def test_a_protocol_header_a_bad_frame_end_and_a_failing_frame_as_in_pika() -> None:
    body = frame.Body(1, b"abc").marshal()
    header = frame.ProtocolHeader(0, 9, 1).marshal()
    bad_end = body[:-1] + b"\x00"
    cases = [(header + body, [2]), (header + body, [3, 9]), (body + bad_end + body, [])]
    for data, cuts in cases:
        assert outcome(amqp_reads.on_data_available, Reader(), data, cuts) == \
            outcome(ORIGINAL, Reader(), data, cuts)

    class Failing(Reader):
        def _process_frame(self, value: Any) -> None:
            super()._process_frame(value)
            if len(self.frames) == 2:
                raise RuntimeError("a frame's processing failed")

    data = body * 4
    assert outcome(amqp_reads.on_data_available, Failing(), data, []) == \
        outcome(ORIGINAL, Failing(), data, [])


def test_a_read_full_of_small_frames_costs_what_decoding_them_costs() -> None:
    # 2 MiB of 21-byte frames in one read (a backlog of confirms): pika's own reader copies
    # the rest of the buffer after each frame, 100,000 copies of 1 MiB on average (measured
    # here: 41x the decoding time, this reader 1.9x). CPU time, no garbage collection, best
    # of three: the machine's load does not decide it
    small = frame.Method(1, spec.Basic.Ack(1, False)).marshal()
    data = small * (2 * 1024 * 1024 // len(small))

    def decode() -> None:
        for offset in range(0, len(data), len(small)):
            frame.decode_frame(data[offset:offset + len(small)])

    def cpu_seconds(work: Any) -> float:
        best = float("inf")
        for _ in range(3):
            gc.collect()
            gc.disable()
            try:
                started = time.process_time()
                work()
                best = min(best, time.process_time() - started)
            finally:
                gc.enable()
        return best

    decoding = cpu_seconds(decode)
    reading = cpu_seconds(lambda: read(amqp_reads.on_data_available, data, []))
    assert len(read(amqp_reads.on_data_available, data, []).frames) == len(data) // len(small)
    assert reading < 6 * decoding + 0.05, (reading, decoding)


def test_common_amqp_installs_it() -> None:
    import common.amqp  # noqa: F401

    assert pika.connection.Connection._on_data_available is amqp_reads.on_data_available


def test_a_later_pika_keeps_its_own_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    transport = amqp_reads._AsyncTransportBase
    monkeypatch.setattr(pika.connection.Connection, "_on_data_available", ORIGINAL)
    monkeypatch.setattr(transport, "_MAX_RECV_BYTES", 4096)  # pika's own read size
    assert not amqp_reads.apply("1.5.0")
    assert pika.connection.Connection.__dict__["_on_data_available"] is ORIGINAL
    assert transport._MAX_RECV_BYTES == 4096
    assert amqp_reads.apply("1.4.4")
    assert pika.connection.Connection.__dict__["_on_data_available"] is \
        amqp_reads.on_data_available
    assert transport._MAX_RECV_BYTES == amqp_reads.RECV_BYTES
