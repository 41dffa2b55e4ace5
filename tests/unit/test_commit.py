"""The commit protocol with its checkpoint written on a thread of its own: nothing is acked,
published or announced before the checkpoint that holds it is on disk, and a crash at any step
recovers, with the broker's redeliveries, exactly the run that had no crash."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.amqp import Delivery
from common.arrays import Arrays
from common.messages import TrainTask, WeightUpdate
from coordinator import checkpoint
from coordinator.commit import Commit, Snapshot
from coordinator.core import CoordinatorCore
from tests.unit.test_coordinator_core import fresh_core, snapshot, update_for


class Acks:
    """A broker that records the delivery tags acked."""

    def __init__(self) -> None:
        self.tags: list[int] = []

    def ack(self, delivery: Delivery) -> None:
        self.tags.append(delivery.tag)


class Run:
    """One coordinator process's commit path: a real core and checkpoint file, a disk that
    can be held (`disk`) and a process that can die (`kill`)."""

    def __init__(self, path: Path, core: CoordinatorCore) -> None:
        self.path, self.core, self.broker = path, core, Acks()
        self.disk, self.dead, self.held = threading.Event(), False, False
        self.disk.set()
        self.writes = 0
        self.published: list[TrainTask] = []
        self.announced: list[tuple[int, list[bytes]]] = []
        self.commit = Commit(self.capture, lambda _b, task: self.published.append(task),
                             self.announce, lambda: (self.core.version, self.core.weights),
                             spacing=0.0)  # capture at every step (see the last test)

    def capture(self) -> Snapshot:
        prepared = checkpoint.prepare({"core": self.core.state()})

        def write() -> None:
            self.disk.wait(10)
            if self.dead:  # killed mid-write: the temporary file is never renamed
                raise OSError("killed")
            checkpoint.write(self.path, prepared)
            self.writes += 1

        return Snapshot(write, lambda: None, (self.core.version, self.core.weights))

    def announce(self, _broker: Any, _versions: list[dict[str, Any]],
                 model: tuple[int, Arrays]) -> None:
        self.announced.append((model[0], [w.tobytes() for w in model[1]]))

    def deliver(self, tag: int, update: WeightUpdate) -> None:
        if self.core.handle(update).kind == "applied":
            self.commit.version({"version": self.core.version})
        self.commit.ack(self.broker, Delivery(body=b"", tag=tag, queue="updates"))  # type: ignore[arg-type]

    def step(self) -> None:
        if self.held:
            self.disk.clear()
        self.commit.run(self.broker)  # type: ignore[arg-type]

    def settle(self) -> None:
        """The disk catches up: the write in progress (if any) completes."""
        self.disk.set()
        if self.commit.writing is not None:
            self.commit.writing[0].result()

    def kill(self) -> None:
        self.dead = True
        self.disk.set()
        self.commit.close()


def start(tmp_path: Path, count: int) -> tuple[Run, list[WeightUpdate]]:
    """A run with `count` tasks issued, checkpointed, and the updates answering them."""
    core = fresh_core()
    updates = [update_for(core, value=float(i + 1)) for i in range(count)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    run = Run(tmp_path / checkpoint.CHECKPOINT_NAME, core)
    run.commit.changed()
    run.commit.flush(run.broker)  # type: ignore[arg-type]
    return run, updates


def test_acks_tasks_and_versions_wait_for_the_checkpoint_that_holds_them(tmp_path: Path) -> None:
    # Given a run whose disk is slow (held), and an update handled
    run, updates = start(tmp_path, 2)
    run.disk.clear()
    run.deliver(1, updates[0])
    run.step()  # the checkpoint of version 1 is being written
    # When a second update arrives while that write is in progress
    run.deliver(2, updates[1])
    run.step()
    # Then nothing is acked or announced yet, and intake went on (version 2 is made)
    assert run.broker.tags == [] and run.announced == [] and run.core.version == 2
    assert run.commit.awaiting == 2
    # When the disk catches up
    run.disk.set()
    run.settle()
    run.step()
    # Then only the first delivery is acked and version 1 (what is on disk) announced, while the
    # second write (version 2) is started; once it is on disk, the rest goes out
    assert run.broker.tags == [1] and [v for v, _ in run.announced] == [1]
    assert checkpoint.load(run.path)["core"]["version"] == 1
    run.settle()
    run.step()
    assert run.broker.tags == [1, 2] and [v for v, _ in run.announced] == [1, 2]
    assert checkpoint.load(run.path)["core"]["version"] == 2


def test_without_a_checkpoint_acks_go_out_at_once(tmp_path: Path) -> None:
    # Given a commit without a checkpoint
    core = fresh_core()
    update = update_for(core)
    broker, announced = Acks(), []
    commit = Commit(None, lambda *_: None, lambda _b, _v, model: announced.append(model[0]),
                    lambda: (core.version, core.weights))
    # When an update is handled and the turn ends
    core.handle(update)
    commit.version({"version": core.version})
    commit.ack(broker, Delivery(body=b"", tag=7, queue="updates"))  # type: ignore[arg-type]
    commit.run(broker)  # type: ignore[arg-type]
    # Then it is acked at once and its version announced
    assert broker.tags == [7] and announced == [1] and commit.writing is None


SCRIPT = ["deliver", "step", "deliver", "step", "settle", "step", "deliver", "step", "settle",
          "step", "settle", "step"]


def play(run: Run, updates: list[WeightUpdate], steps: list[str]) -> None:
    delivered = 0
    for name in steps:
        if name == "deliver":
            run.deliver(delivered, updates[delivered])
            delivered += 1
        else:
            getattr(run, name)()


@pytest.mark.parametrize("held", [False, True], ids=["fast-disk", "write-in-progress"])
@pytest.mark.parametrize("crash_after", range(len(SCRIPT) + 1))
def test_a_crash_at_any_step_recovers_exactly_the_run_without_a_crash(
        tmp_path: Path, crash_after: int, held: bool) -> None:
    # Given the run without a crash, played to its end
    reference, updates = start(tmp_path / "reference", 3)
    begin = checkpoint.load(reference.path)["core"]  # its tasks issued, nothing applied
    play(reference, updates, SCRIPT)
    assert reference.broker.tags == [0, 1, 2] and reference.core.applied == 3
    # and the same run killed after `crash_after` steps (held: its writes complete only when
    # the script lets the disk catch up, so a kill can land while one is in progress)
    (tmp_path / "crashed").mkdir()
    run = Run(tmp_path / "crashed" / checkpoint.CHECKPOINT_NAME, fresh_core())
    run.core.load_state(begin)
    checkpoint.save(run.path, {"core": begin})
    run.held = held
    play(run, updates, SCRIPT[:crash_after])
    run.kill()
    on_disk = checkpoint.load(run.path)["core"]
    acked = set(run.broker.tags)

    # Then everything acked is in the checkpoint on disk, and no version beyond it was announced
    on_disk_ids = set(checkpoint.unpack_strings(on_disk["accepted_ids"]))
    assert {updates[tag].update_id for tag in acked} <= on_disk_ids
    assert all(version <= on_disk["version"] for version, _ in run.announced)
    # When a new process resumes from the checkpoint and the broker redelivers what was not
    # acked (and a worker's duplicate of what was)
    resumed = Run(run.path, fresh_core())
    resumed.core.load_state(on_disk)
    for tag, update in enumerate(updates):
        resumed.deliver(tag, update)
    resumed.commit.flush(resumed.broker)  # type: ignore[arg-type]
    # Then the model, version and every update id are those of the run without a crash: each
    # update applied once, and every version announced before the crash made the same again
    assert snapshot(resumed.core) == snapshot(reference.core)
    assert resumed.core.accepted_ids.keys() == reference.core.accepted_ids.keys()
    assert resumed.core.applied == 3 and resumed.core.duplicates == len(on_disk_ids)
    made = dict(reference.announced)
    assert all(made[version] == weights for version, weights in run.announced)
    assert snapshot(resumed.core) == (3, made[3])


def test_the_writer_thread_gets_consistent_arrays(tmp_path: Path) -> None:
    # Given a capture taken at version 1
    run, updates = start(tmp_path, 2)
    run.disk.clear()
    run.deliver(0, updates[0])
    run.step()
    captured = [w.copy() for w in run.core.weights]
    # When the loop applies another update before the write runs
    run.deliver(1, updates[1])
    run.disk.set()
    run.settle()
    # Then the checkpoint holds version 1's arrays, unchanged by the later update
    state = checkpoint.load(run.path)["core"]
    assert state["version"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(state["weights"], captured, strict=True))


def test_captures_take_a_bounded_share_of_the_loop_however_costly(tmp_path: Path) -> None:
    # Given a commit whose capture costs 20 ms (a long job's bookkeeping), with the default
    # spacing, and a loop that has something new to checkpoint at every turn
    captures: list[float] = []

    def capture() -> Snapshot:
        time.sleep(0.02)
        captures.append(time.monotonic())
        return Snapshot(lambda: None, lambda: None, (0, []))

    commit = Commit(capture, lambda *_: None, lambda *_: None, lambda: (0, []))
    broker = Acks()
    # When the loop turns for 0.6 s
    began = time.monotonic()
    while time.monotonic() - began < 0.6:
        commit.changed()
        commit.run(broker)  # type: ignore[arg-type]
        time.sleep(0.001)
    commit.close()
    # Then it captured a few times, not at every turn: at most about a tenth of its time
    assert 2 <= len(captures) <= 5, len(captures)
    # and a flush still captures at once
    before = len(captures)
    commit.changed()
    commit.flush(broker)  # type: ignore[arg-type]
    assert len(captures) == before + 1


def test_a_delivery_awaiting_its_checkpoint_is_held_without_its_body(tmp_path: Path) -> None:
    # Given a commit with a checkpoint and a handled 1 MB delivery
    run, _ = start(tmp_path, 1)
    delivery = Delivery(body=bytes(1 << 20), tag=5, queue="updates")
    # When it is acked through the commit (held until the checkpoint covers it)
    run.commit.ack(run.broker, delivery)  # type: ignore[arg-type]
    # Then only its tag is kept, and that is what is acked
    assert [(d.tag, d.body) for d in run.commit.pending.acks] == [(5, b"")]
    run.commit.flush(run.broker)  # type: ignore[arg-type]
    assert run.broker.tags == [5]
