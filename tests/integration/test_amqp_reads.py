"""pika's socket reads on the real broker (common/amqp_reads.py): a large body arrives in
frame-sized reads, not 4 KiB ones."""

from __future__ import annotations

import os
import time

import pytest

from common.amqp import Broker
from common.topology import QueueSpec

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def test_a_large_body_arrives_in_frame_sized_socket_reads(
        amqp_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """pika read its socket 4 KiB at a time, copying its growing frame buffer on each read
    (common/amqp_reads.py): a 2 MiB body took at least 512 reads. Now up to a frame a read
    (28 in all, connection and publish included, in three runs by hand)."""
    from pika.adapters.utils import io_services_utils as io

    reads: list[int] = []
    recv = io._AsyncTransportBase._sigint_safe_recv

    def counted(sock: object, max_bytes: int) -> bytes:
        data: bytes = recv(sock, max_bytes)
        reads.append(len(data))
        return data

    body = os.urandom(2 * MiB)
    broker = Broker(amqp_url, name="fedmq-test-socket-reads")
    queue = f"fedmq.test.reads-{os.getpid()}"
    try:
        broker.declare_queue(QueueSpec(queue, durable=False))
        broker.publish("", queue, body)
        monkeypatch.setattr(io._AsyncTransportBase, "_sigint_safe_recv", staticmethod(counted))
        delivery, deadline = None, time.monotonic() + 30
        while delivery is None and time.monotonic() < deadline:
            delivery = broker.get(queue)
        assert delivery is not None, "the message never came back"
        assert delivery.body == body
        broker.ack(delivery)
    finally:
        monkeypatch.undo()
        broker.delete(queue)
        broker.close()
    assert sum(reads) >= len(body)
    assert len(reads) < 200, f"{len(reads)} socket reads for a 2 MiB body"
