"""How large pika's socket reads are (part of common/amqp.py, the only code that uses pika).

pika 1.x reads its socket 4 KiB at a time and appends each read to its frame buffer, a bytes
object copied whole on every append, so a 128 KiB frame (RabbitMQ's default frame_max) was
copied about 16 times on its way in: the largest cost of receiving a large body. Reads of one
frame's size make it about twice. pika has no setting for it, so its transport's class attribute
is set here, once, when common/amqp.py is imported (docs/benchmarks.md, "pika's socket reads").
"""

from __future__ import annotations

from pika.adapters.utils.io_services_utils import _AsyncTransportBase

RECV_BYTES = 128 * 1024  # one frame at RabbitMQ's default frame_max


def apply() -> None:
    _AsyncTransportBase._MAX_RECV_BYTES = RECV_BYTES


def applied() -> bool:
    return _AsyncTransportBase._MAX_RECV_BYTES == RECV_BYTES
