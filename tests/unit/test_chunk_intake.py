"""The coordinator's chunk intake over its spool (coordinator/chunk_intake.py, spool.py): chunks
go to disk on the spool's own thread, and a chunk's delivery is acked only once it is on disk."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from common import chunks
from common.amqp import Delivery
from common.chunks import ChunkError
from coordinator.chunk_intake import ChunkIntake
from coordinator.spool import DiskStore

BODY = os.urandom(1050)


class Acks:
    """The broker as the intake uses it: the tags it acked."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery.tag)


def deliveries(body: bytes = BODY, size: int = 100) -> list[Delivery]:
    return [Delivery(bytes(part), tag, "fedmq.updates", header.fields())
            for tag, (header, part) in enumerate(chunks.split(body, size), start=1)]


def intake(root: Path, bodies: list[bytearray]) -> ChunkIntake:
    def refused(_broker: Any, _delivery: Delivery | None, exc: ChunkError) -> None:
        raise AssertionError(exc.reason)

    return ChunkIntake(root, max_body_bytes=10_000, max_partials=4, expiry_seconds=30,
                       checkpointed=True, on_body=lambda _b, _d, body: bodies.append(body),
                       on_refused=refused)


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Writes of the spool wait until the returned event is set."""
    gate = threading.Event()
    put = DiskStore._put

    def waiting(self: DiskStore, header: chunks.ChunkHeader, data: bytes) -> None:
        assert gate.wait(10), "the test never opened the gate"
        put(self, header, data)

    monkeypatch.setattr(DiskStore, "_put", waiting)
    return gate


def test_a_chunk_is_acked_only_once_the_spool_wrote_it(
        tmp_path: Path, slow_disk: threading.Event) -> None:
    # Given an intake whose disk is slow, and three chunks of an update delivered
    broker, bodies = Acks(), []
    taken = intake(tmp_path, bodies)
    parts = deliveries()
    for delivery in parts[:3]:
        taken.chunk(broker, delivery)  # type: ignore[arg-type]
    # Then none is acked while its write waits, nor is any file there
    taken.ack_written(broker)  # type: ignore[arg-type]
    assert broker.acked == [] and not list(tmp_path.glob("spool/*/*.chunk"))
    # When the disk catches up
    slow_disk.set()
    taken.spool.store.written(wait=True)
    taken.ack_written(broker)  # type: ignore[arg-type]
    # Then the three are acked, in order, each with its file on disk
    assert broker.acked == [1, 2, 3]
    assert len(list(tmp_path.glob("spool/*/*.chunk"))) == 3


def test_the_last_chunk_waits_for_the_writes_and_the_body_is_whole(tmp_path: Path) -> None:
    # Given every chunk of an update, delivered while earlier ones may still be being written
    broker, bodies = Acks(), []
    taken = intake(tmp_path, bodies)
    parts = deliveries()
    for delivery in parts:
        taken.chunk(broker, delivery)  # type: ignore[arg-type]
    # Then the body is handed on whole and verified, and every chunk but the last is acked
    # (the last goes through the commit, after the checkpoint)
    assert bodies == [bytearray(BODY)]
    assert broker.acked == [d.tag for d in parts[:-1]]


def test_a_new_connection_forgets_the_chunks_the_lost_one_held(
        tmp_path: Path, slow_disk: threading.Event) -> None:
    # Given two chunks held for their writes when the connection was lost
    broker, bodies = Acks(), []
    taken = intake(tmp_path, bodies)
    for delivery in deliveries()[:2]:
        taken.chunk(broker, delivery)  # type: ignore[arg-type]
    # When the intake is attached to a new connection and the writes end
    taken.attach(lambda: None)
    slow_disk.set()
    taken.spool.store.written(wait=True)
    taken.ack_written(broker)  # type: ignore[arg-type]
    # Then nothing is acked on the new one (its delivery tags are not those)
    assert broker.acked == []


def test_a_failed_write_is_raised_on_the_loop_and_its_chunk_never_acked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: DiskStore, header: chunks.ChunkHeader, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DiskStore, "_put", full)
    broker, bodies = Acks(), []
    taken = intake(tmp_path, bodies)
    with pytest.raises(OSError, match="No space"):
        taken.chunk(broker, deliveries()[0])  # type: ignore[arg-type]
        taken.spool.store.written(wait=True)
    assert broker.acked == []
