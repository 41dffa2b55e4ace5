"""The coordinator's durable chunk spool: chunked updates survive a crash mid-transfer.

Each chunk of an update is written to `<out>/spool/<transfer id>/<index>.chunk` (written to a
temporary name, fsynced, renamed) before its delivery is acked, so the coordinator never holds
chunk deliveries unacked: its prefetch can never fill up with partial transfers (no deadlock
whatever the chunk count), and a chunk's delivery limit counts only real failures. The last
chunk of a transfer completes it: that delivery is acked through the commit protocol (after the
checkpoint that holds the update), and the transfer's files are removed only after that
checkpoint (`saved`). The files of a
released transfer become a tombstone (its meta.json and `done`) until the next checkpoint, so a
last chunk redelivered after a crash between the checkpoint and its ack is known as a
duplicate. A coordinator that dies keeps its spool: on resume
`recover` takes back the partial transfers (their missing chunks were never acked, so the broker
redelivers them) and hands out the complete ones, whose update the checkpoint either holds (then
it is a duplicate by its id) or does not (then it is applied now): exactly once either way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common.chunks import TRANSFER_ID, ChunkError, ChunkHeader, Reassembler

log = logging.getLogger("fedmq.coordinator")


class DiskStore:
    """Chunks as files under `root`, one directory per transfer (its header in meta.json).

    `put` and `tombstone` hand their work to the store's own thread and return: the loop goes
    on receiving while a chunk goes to disk (writing and fsyncing each 4 MiB chunk on the loop
    was a quarter of the coordinator's loop at 40 MB in `fedmq bench scale`). That work is done
    in order; `written()` counts what is done, so a chunk's delivery is acked only once its put
    is counted. Every other method waits for the writes in flight first, so files are only ever
    touched by one thread at a time; all but that work run on the loop's thread.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.submitted = 0  # puts and tombstones handed to the writer
        self.on_written: Callable[[], None] = lambda: None  # from the writer (thread-safe)
        self._done = 0  # of those, done (in order: one writer thread)
        self._writes: deque[Future[None]] = deque()
        self._writer: ThreadPoolExecutor | None = None

    def _dir(self, transfer_id: str) -> Path:
        assert TRANSFER_ID.match(transfer_id), "transfer ids are checked by chunks.parse"
        return self.root / transfer_id

    def put(self, header: ChunkHeader, data: bytes) -> None:
        """Write the chunk on the store's thread; it is durable once `written()` counts it."""
        self._submit(self._put, header, data)

    def _submit(self, job: Callable[..., None], *args: Any) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="fedmq-spool")
        write = self._writer.submit(job, *args)
        write.add_done_callback(lambda _: self.on_written())
        self._writes.append(write)
        self.submitted += 1

    def written(self, wait: bool = False) -> int:
        """How many puts are on disk (all of them with `wait`); raises a write's error (a full
        disk, say) as the write itself would have."""
        while self._writes and (wait or self._writes[0].done()):
            self._writes[0].result()
            self._writes.popleft()
            self._done += 1
        return self._done

    def _put(self, header: ChunkHeader, data: bytes) -> None:
        directory = self._dir(header.transfer_id)
        if not directory.exists():
            directory.mkdir(parents=True)
            _write(directory / "meta.json", json.dumps(header.fields()).encode())
            _sync_dir(self.root)
        _write(directory / f"{header.index}.chunk", data)
        _sync_dir(directory)

    def get(self, transfer_id: str, index: int) -> bytes | None:
        self.written(wait=True)
        path = self._dir(transfer_id) / f"{index}.chunk"
        return path.read_bytes() if path.exists() else None

    def join(self, header: ChunkHeader) -> bytearray:
        self.written(wait=True)
        body = bytearray(header.total)
        view, offset = memoryview(body), 0
        for index in range(header.count):
            with open(self._dir(header.transfer_id) / f"{index}.chunk", "rb") as part:
                size = os.fstat(part.fileno()).st_size
                if offset + size > header.total:
                    raise ChunkError(f"transfer {header.transfer_id}: spooled chunks exceed "
                                     f"{header.total} bytes", header.transfer_id)
                part.readinto(view[offset:offset + size])
                offset += size
        return body

    def drop(self, transfer_id: str) -> None:
        self.written(wait=True)
        shutil.rmtree(self._dir(transfer_id), ignore_errors=True)

    def tombstone(self, transfer_id: str) -> None:
        """Keep only a marker that the transfer is finished (its chunks are deleted, on the
        store's thread: deleting a 40 MB update's chunks was 5 % of the loop)."""
        self._submit(self._tombstone, transfer_id)

    def _tombstone(self, transfer_id: str) -> None:
        directory = self._dir(transfer_id)
        if directory.exists():
            _write(directory / "done", b"")
            for path in directory.glob("*.chunk"):
                path.unlink()

    def clear(self) -> None:
        self.written(wait=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def found(self) -> list[tuple[ChunkHeader, dict[int, int] | None]]:
        """Every spooled transfer: its header and the sizes of the chunks held, by index (None
        for a finished transfer's tombstone)."""
        self.written(wait=True)
        transfers: list[tuple[ChunkHeader, dict[int, int] | None]] = []
        for directory in sorted(self.root.glob("*")) if self.root.exists() else []:
            meta = directory / "meta.json"
            if not TRANSFER_ID.match(directory.name) or not meta.exists():
                shutil.rmtree(directory, ignore_errors=True)
                continue
            fields = json.loads(meta.read_text())
            header = ChunkHeader(fields["x-fedmq-transfer"], 0, fields["x-fedmq-chunks"],
                                 fields["x-fedmq-body-bytes"], fields["x-fedmq-sha256"])
            if (directory / "done").exists():
                transfers.append((header, None))
                continue
            sizes = {int(path.stem): path.stat().st_size for path in directory.glob("*.chunk")}
            transfers.append((header, sizes))
        return transfers


class Spool:
    """The coordinator's reassembler over a DiskStore, and the transfers awaiting a checkpoint."""

    def __init__(self, root: Path, *, max_body_bytes: int, max_partials: int,
                 expiry_seconds: float, checkpointed: bool = True) -> None:
        self.store = DiskStore(root)
        self.reassembler = Reassembler(self.store, max_body_bytes=max_body_bytes,
                                       max_partials=max_partials, expiry_seconds=expiry_seconds)
        self.checkpointed = checkpointed  # False: a handled transfer goes at once
        self.awaiting_commit: list[str] = []  # handled, not yet in a checkpoint
        self.tombstones: list[str] = []  # in a checkpoint; their last ack may be in flight

    def recover(self) -> list[tuple[str, bytearray]]:
        """Take back what a previous run spooled; the complete transfers' bodies, to handle."""
        complete = []
        for header, sizes in self.store.found():
            if sizes is None:  # finished before the crash: its redelivered chunks are old news
                self.reassembler.closed[header.transfer_id] = None
                self.store.drop(header.transfer_id)
                continue
            try:
                body = self.reassembler.recover(header, sizes)
            except ChunkError as exc:
                log.warning("spooled transfer refused: %s", exc.reason)
                continue
            if body is not None:
                complete.append((header.transfer_id, body))
        if self.reassembler.partials or complete:
            log.info("spool: %d partial and %d complete transfers taken back",
                     len(self.reassembler.partials), len(complete))
        return complete

    def handled(self, transfer_id: str) -> None:
        """The transfer's body was judged; its files go once the next checkpoint is written."""
        if self.checkpointed:
            self.awaiting_commit.append(transfer_id)
        else:
            self.reassembler.release(transfer_id)

    def covered(self) -> list[str]:
        """Call when a checkpoint is captured: the transfers handled until now are in it (it
        may still be written on another thread; pass the list to `saved` once it is)."""
        covered, self.awaiting_commit = self.awaiting_commit, []
        return covered

    def saved(self, covered: list[str] | None = None) -> None:
        """Call when a checkpoint was just written: the transfers it `covered` (None: every one
        handled until now) are in it. Their chunks go (a tombstone stays until the next
        checkpoint, by when the commit that wrote this one has acked their last chunk)."""
        if covered is None:
            covered = self.covered()
        for transfer_id in self.tombstones:
            self.reassembler.release(transfer_id)
        for transfer_id in covered:
            self.store.tombstone(transfer_id)
        self.tombstones = covered


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
