"""The coordinator's checkpoint: exact round trips, atomic replacement, no pickle, and a core that
goes on after a restart exactly as it would have without one."""

from __future__ import annotations

import json
import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.codec import Opened
from common.errors import RejectedUpdate
from common.messages import WeightUpdate
from common.privacy import PrivacyLedger
from common.sealing import Seal
from coordinator import checkpoint
from coordinator.admission import Admission, Signers
from coordinator.core import CoordinatorCore
from coordinator.history import History
from coordinator.results import write_history
from coordinator.strategies import FedBuff
from tests.unit.test_coordinator_core import fresh_core, snapshot, update_for


def buffered_core() -> CoordinatorCore:
    """A FedBuff core with momentum, one flush behind it and two deltas in its buffer."""
    core = fresh_core(FedBuff(buffer_size=3, momentum=0.9), max_staleness=10)
    for value in (1.0, 2.0, 3.0, 0.5, -1.0):
        core.handle(update_for(core, value))
    core.issue_task()
    core.handle(update_for(core, task_id="never-issued"))  # a rejection, with its id
    return core


def test_a_core_round_trips_through_a_checkpoint_exactly(tmp_path: Path) -> None:
    # Given a core with applied, buffered, rejected and in-flight state
    core = buffered_core()
    path = tmp_path / checkpoint.CHECKPOINT_NAME
    # When it is saved and loaded into a fresh core
    checkpoint.save(path, {"core": core.state(), "note": "x"})
    loaded = fresh_core(FedBuff(buffer_size=3, momentum=0.9), max_staleness=10)
    state = checkpoint.load(path)
    loaded.load_state(state["core"])
    # Then every part of it is equal, arrays bit for bit
    assert state["note"] == "x"
    assert snapshot(loaded) == snapshot(core)
    assert loaded.accepted_ids == core.accepted_ids and list(loaded.accepted_ids) == list(
        core.accepted_ids)
    assert (loaded.issued, loaded.in_flight) == (core.issued, core.in_flight)
    assert (loaded.rejected, loaded.rejected_ids) == (core.rejected, core.rejected_ids)
    assert (loaded.applied, loaded.duplicates, loaded.workers) == (
        core.applied, core.duplicates, core.workers)
    mine, theirs = loaded.strategy, core.strategy
    assert isinstance(mine, FedBuff) and isinstance(theirs, FedBuff)
    assert mine.weights == theirs.weights and len(mine.deltas) == len(theirs.deltas) == 2
    assert mine.workers == theirs.workers and len(mine.workers) == 2 and mine.workers[0]
    for a, b in zip(sum(mine.deltas, []) + (mine.velocity or []),
                    sum(theirs.deltas, []) + (theirs.velocity or []), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_a_restored_core_continues_exactly_like_the_original() -> None:
    # Given a core and its restored copy
    core = buffered_core()
    copy = fresh_core(FedBuff(buffer_size=3, momentum=0.9), max_staleness=10)
    copy.load_state(core.state())
    # When both get the same next update, and the copy also gets an update it already applied
    task = core.issue_task()
    copy.issued.add(task.task_id)
    update = update_for(core, 0.25, task_id=task.task_id)
    first = next(iter(core.accepted_ids))
    # Then the models stay identical and the replayed update is a duplicate
    assert core.handle(update) == copy.handle(update)
    assert snapshot(core) == snapshot(copy)
    replayed = WeightUpdate(update_id=first, worker_id="w", task_id=task.task_id,
                            base_version=0, num_examples=1, train_seconds=0.1,
                            weights=tuple(copy.weights), is_delta=True)
    assert copy.handle(replayed).kind == "duplicate" and snapshot(core) == snapshot(copy)


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a checkpoint on disk
    path = tmp_path / checkpoint.CHECKPOINT_NAME
    checkpoint.save(path, {"version": 1, "weights": [np.ones(3, np.float32)]})

    # When the next write dies before its rename (a crash, a full disk)
    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        checkpoint.save(path, {"version": 2, "weights": [np.zeros(3, np.float32)]})
    # Then the old checkpoint is still there, whole
    state = checkpoint.load(path)
    assert state["version"] == 1 and state["weights"][0].tolist() == [1.0, 1.0, 1.0]


def test_a_checkpoint_never_unpickles(tmp_path: Path) -> None:
    # Given files that are not checkpoints: a pickle, garbage, one whose array is an object
    # array (reading it would unpickle), and none at all
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"version": 1}))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(200))
    linked = tmp_path / "linked.npz"
    np.savez(linked, state_json=np.frombuffer(
        json.dumps({"format": 1, "w": {"$array": "a0"}}).encode(), np.uint8),
        a0=np.array([{"x": 1}], dtype=object))
    # When they are loaded, then each is refused with a CheckpointError
    for path in (pickled, garbage, linked, tmp_path / "missing.npz"):
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load(path)


def test_expired_tasks_leave_flight_but_a_late_update_still_counts() -> None:
    # Given two tasks, one issued long ago
    core = fresh_core()
    old_update = update_for(core, 1.0)
    core.in_flight[old_update.task_id] -= 1000
    recent = core.issue_task()
    # When the deadline passes for the old one
    assert core.expire(300.0) == [old_update.task_id]
    # Then only the recent one is awaited, and the old one's late update is still applied
    assert set(core.in_flight) == {recent.task_id} and core.expired == 1
    assert core.handle(old_update).kind == "applied"


def test_privacy_spending_and_replay_protection_survive_a_restart(tmp_path: Path) -> None:
    # Given a sealed admission (signers and a privacy ledger) that has admitted two updates
    # of w1, one of them accepted by the core
    core = fresh_core()
    admission = Admission(Signers(tmp_path / "registry.json"),
                          PrivacyLedger(1.0, 1e-5, budget=None))
    first = Opened(update_for(core, worker_id="w1"), Seal(signer="w1", nonce=b"1" * 12))
    second = Opened(update_for(core, worker_id="w1"), Seal(signer="w1", nonce=b"2" * 12))
    for opened in (first, second):
        admission.admit(opened, core.accepted_ids, core.claim)
    core.handle(first.message)
    # When its state and the core's go through a real checkpoint into a fresh coordinator
    path = tmp_path / checkpoint.CHECKPOINT_NAME
    checkpoint.save(path, {"intake": admission.state(), "core": core.state()})
    state = checkpoint.load(path)
    fresh = Admission(Signers(tmp_path / "registry.json"), PrivacyLedger(1.0, 1e-5, budget=None))
    fresh.load_state(state["intake"])
    restored = fresh_core()
    restored.load_state(state["core"])
    # Then the worker's spending carries on from two releases
    assert fresh.ledger is not None and fresh.ledger.releases["w1"] == 2
    assert fresh.epsilon() == admission.epsilon()
    # and replay protection holds: the update not accepted is a replay (by id and by nonce)
    with pytest.raises(RejectedUpdate, match="received before"):
        fresh.admit(second, restored.accepted_ids, restored.claim)
    reused = Opened(update_for(restored, worker_id="w1"), Seal(signer="w1", nonce=b"2" * 12))
    with pytest.raises(RejectedUpdate, match="received before"):
        fresh.admit(reused, restored.accepted_ids, restored.claim)
    # while the accepted one, redelivered, is a duplicate that is not charged again
    assert fresh.admit(first, restored.accepted_ids, restored.claim) is True
    assert fresh.ledger.releases["w1"] == 2


def test_a_second_coordinator_cannot_take_the_same_directory(tmp_path: Path) -> None:
    # Given a coordinator holding its directory
    held = checkpoint.lock(tmp_path)
    # When another one tries to take it, then it is refused with the holder's pid
    with pytest.raises(checkpoint.CheckpointError, match=f"pid {os.getpid()}"):
        checkpoint.lock(tmp_path)
    # and once the first lets go (it exits, or is killed), the directory is free again
    held.close()
    checkpoint.lock(tmp_path).close()


@given(st.lists(st.text(max_size=40), max_size=30))
def test_packed_strings_round_trip(strings: list[str]) -> None:
    # Any strings (empty, non-ASCII, none at all) come back as they went in
    assert checkpoint.unpack_strings(checkpoint.pack_strings(strings)) == strings


def test_packed_strings_that_do_not_add_up_are_refused() -> None:
    packed = checkpoint.pack_strings(["abc", "de"])
    packed["lengths"] = np.array([3, 3])
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.unpack_strings(packed)


def test_a_standby_waits_for_the_directory_and_gives_up_when_stopped(tmp_path: Path) -> None:
    # Given a directory held by a coordinator
    held = checkpoint.lock(tmp_path)
    stop = threading.Event()
    # When a standby waits for it and is stopped, then it gets nothing
    threading.Timer(0.3, stop.set).start()
    assert checkpoint.await_lock(tmp_path, stop, poll=0.05) is None
    # When the holder lets go while a standby waits, then the standby gets the directory
    threading.Timer(0.3, held.close).start()
    taken = checkpoint.await_lock(tmp_path, threading.Event(), poll=0.05)
    assert taken is not None and checkpoint.holder(tmp_path) == str(os.getpid())
    taken.close()


def test_an_object_array_is_never_written(tmp_path: Path) -> None:
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.save(tmp_path / "c.npz", {"x": np.array([{"a": 1}], dtype=object)})
    assert not (tmp_path / "c.npz").exists()


def test_history_round_trips_through_a_checkpoint_to_the_same_csv(tmp_path: Path) -> None:
    # Given a history with evaluated and unevaluated rows, blank cells, epsilon and version 0
    history = History()
    history.score(0, 0.0, 0.1, 2.3)
    history.add(1, 0.5, 0, "w-1")
    history.add(2, 0.75, None, "", epsilon=1.25)
    history.score(2, 0.8, 0.5, 1.1)
    history.add(3, 1.0, 2, "wörker")
    # When it goes through a checkpoint
    checkpoint.save(tmp_path / "c.npz", {"history": history.columns()})
    restored = History.from_columns(checkpoint.load(tmp_path / "c.npz")["history"])
    # Then history.csv comes out byte for byte the same
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_history(tmp_path / "a", history)
    write_history(tmp_path / "b", restored)
    assert (tmp_path / "a" / "history.csv").read_bytes() == \
        (tmp_path / "b" / "history.csv").read_bytes()
    assert restored.curve() == history.curve()
