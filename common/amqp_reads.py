"""How pika takes frames off its socket (part of common/amqp.py, the only code that uses pika).

pika 1.4 reads its socket 4 KiB at a time, appends each read to its frame buffer (a bytes
object) and, after each frame it decodes, copies the rest of the buffer to drop the frame. Both
copies grow with the buffer: a 128 KiB body frame (RabbitMQ's default frame_max) was copied about
16 times on its way in, and a read holding many small frames (tasks, events, confirms after a
backlog) is copied once per frame, which grows with the square of the read size: larger reads
alone would make that worse. pika has no setting for either, so this module, once, when
common/amqp.py is imported, replaces pika's `Connection._on_data_available` with one that cuts
frames from the buffer at an offset (the frames of one read are each sliced out of it once, and
sliced again by pika's `decode_frame`, however many there are; a frame spread over several reads
is still joined once per read, as in pika) and makes the reads one frame long
(docs/benchmarks.md, "pika's frame reader"). Over TLS a read returns at most one TLS record
(16 KiB) whatever is asked. Unlike pika's, the reader is not re-entrant (the frames of a read
leave the buffer after the read, not one by one): nothing pika runs inside `_process_frame`
reads the socket with BlockingConnection, which only queues events there (handlers run after
the read); a SelectConnection that read from a frame handler would need the offset kept on the
connection.
"""

from __future__ import annotations

import struct

import pika
from pika import frame, spec
from pika.adapters.utils.io_services_utils import _AsyncTransportBase
from pika.connection import Connection

RECV_BYTES = 128 * 1024  # one frame at RabbitMQ's default frame_max
PIKA_READER = Connection.__dict__["_on_data_available"]  # pika's own, for the tests to compare
_HEADER = struct.Struct(">BHL")  # frame type, channel, payload size (pika.frame.decode_frame)
_PROTOCOL_HEADER = b"AMQP"  # what a broker sends back on a protocol version mismatch: 8 bytes


def frame_end(buffer: bytes, offset: int) -> int | None:
    """Where the frame that starts at `offset` ends, or None while it is not all there."""
    if buffer.startswith(_PROTOCOL_HEADER, offset):
        end = offset + 8
    elif len(buffer) - offset < _HEADER.size:
        return None
    else:
        size = _HEADER.unpack_from(buffer, offset)[2]
        end = offset + _HEADER.size + size + spec.FRAME_END_SIZE
    return end if end <= len(buffer) else None


def on_data_available(self: Connection, data_in: bytes) -> None:
    """pika's `Connection._on_data_available`, cutting frames at an offset: the same frames,
    processed in the same order, with the same byte count for the heartbeat checker. A frame
    whose processing resets the connection's state (a new, empty frame buffer) ends the read,
    as it ends pika's."""
    buffer = self._frame_buffer + data_in if self._frame_buffer else data_in
    self._frame_buffer = buffer
    offset = 0
    try:
        while (end := frame_end(buffer, offset)) is not None:
            consumed, value = frame.decode_frame(buffer[offset:end])
            if value is None:
                break
            offset += consumed
            self.bytes_received += consumed
            self._process_frame(value)
            if self._frame_buffer is not buffer:  # reset meanwhile
                return
    finally:
        if self._frame_buffer is buffer:
            self._frame_buffer = buffer[offset:]


WRITTEN_FOR = ("1.3.", "1.4.")  # the pika releases whose reader is the one described above


def apply(version: str = pika.__version__) -> bool:
    """Install the reader and the read size on the pika releases they were written for (True);
    a later pika, whose reader may differ or be fixed, keeps its own (False)."""
    if not version.startswith(WRITTEN_FOR):
        return False
    _AsyncTransportBase._MAX_RECV_BYTES = RECV_BYTES
    Connection._on_data_available = on_data_available
    return True
