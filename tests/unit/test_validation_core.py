"""The coordinator's rules without a broker (coordinator/validation.py, coordinator/core.py): every
rejection code leaves the global model and version alone, duplicates are never applied twice, and
an applied update moves the model exactly as the FedAsync step says."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from common.errors import RejectedUpdate
from common.messages import WeightUpdate, new_id
from common.settings import TrainingSettings
from coordinator.core import CoordinatorCore
from coordinator.strategies import FedAsync, FedBuff, Strategy, fedasync_step, make_staleness
from coordinator.validation import check_arrays, check_update

ALPHA, EXPONENT = 0.5, 0.5


def received(core: CoordinatorCore) -> int:
    """Updates that reached a decision: accepted, rejected or recognised as duplicates."""
    return len(core.accepted_ids) + core.rejected_total + core.duplicates
STALENESS_FN = make_staleness("polynomial", EXPONENT)


def new_core(max_staleness: int = 3, strategy: Strategy | None = None) -> CoordinatorCore:
    """A core whose global model is two float32 layers of zeros, at version 0."""
    return CoordinatorCore(
        weights=[np.zeros((2, 3), np.float32), np.zeros(3, np.float32)],
        strategy=strategy or FedAsync(ALPHA, STALENESS_FN), max_staleness=max_staleness,
        training=TrainingSettings(local_epochs=3, batch_size=4, learning_rate=0.1), job="j")


def good_update(core: CoordinatorCore, value: float = 1.0, **changes: Any) -> WeightUpdate:
    """A valid update for a freshly issued task, trained from the current version."""
    task = core.issue_task()
    update = WeightUpdate(
        update_id=new_id(), worker_id="w1", task_id=task.task_id, base_version=core.version,
        num_examples=10, train_seconds=0.1, is_delta=core.strategy.wants_delta,
        weights=tuple(np.full(w.shape, value, w.dtype) for w in core.weights))
    return replace(update, **changes)


def state(core: CoordinatorCore) -> tuple[int, list[bytes], int, int]:
    """What no rejected or duplicate update may change."""
    return core.version, [w.tobytes() for w in core.weights], core.applied, len(core.accepted_ids)


def advance(core: CoordinatorCore, versions: int) -> None:
    for _ in range(versions):
        assert core.handle(good_update(core)).kind == "applied"


def layers(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(arrays)


NAN = float("nan")
INF = float("inf")
BAD_UPDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "task never issued": ("unknown_task", {"task_id": "not-a-task"}),
    "base version from the future": ("future_version", {"base_version": 3}),
    "negative base version": ("bad_version", {"base_version": -1}),
    "no examples": ("bad_num_examples", {"num_examples": 0}),
    "negative examples": ("bad_num_examples", {"num_examples": -5}),
    "missing layer": ("shape_mismatch", {"weights": layers(np.zeros((2, 3), np.float32))}),
    "extra layer": ("shape_mismatch", {"weights": layers(
        np.zeros((2, 3), np.float32), np.zeros(3, np.float32), np.zeros(1, np.float32))}),
    "wrong shape": ("shape_mismatch", {"weights": layers(
        np.zeros((3, 2), np.float32), np.zeros(3, np.float32))}),
    "float64 for float32": ("dtype_mismatch", {"weights": layers(
        np.zeros((2, 3), np.float64), np.zeros(3, np.float32))}),
    "int32 for float32": ("dtype_mismatch", {"weights": layers(
        np.zeros((2, 3), np.float32), np.zeros(3, np.int32))}),
    "NaN": ("non_finite", {"weights": layers(
        np.zeros((2, 3), np.float32), np.array([0, NAN, 0], np.float32))}),
    "Inf": ("non_finite", {"weights": layers(
        np.full((2, 3), INF, np.float32), np.zeros(3, np.float32))}),
    "-Inf": ("non_finite", {"weights": layers(
        np.zeros((2, 3), np.float32), np.array([0, 0, -INF], np.float32))}),
}


# ---------------------------------------------------------------- validation on its own

@pytest.mark.parametrize("case", list(BAD_UPDATES))
def test_check_update_names_the_reason(case: str) -> None:
    # Given an update wrong in one way, when it is checked
    code, changes = BAD_UPDATES[case]
    core = new_core()
    update = good_update(core, **changes)
    with pytest.raises(RejectedUpdate) as rejected:
        check_update(update, version=core.version, max_staleness=3, issued_tasks=core.issued,
                     template=core.weights)
    # Then the rejection carries its code and a reason sentence that starts with it
    assert rejected.value.code == code
    assert rejected.value.reason.startswith(f"{code}: ") and len(rejected.value.reason) > 12


def test_check_update_returns_the_staleness_of_a_good_update() -> None:
    core = new_core()
    update = good_update(core, base_version=1)
    assert check_update(update, version=3, max_staleness=3, issued_tasks=core.issued,
                        template=core.weights) == 2


def test_staleness_exactly_at_the_limit_is_accepted_and_one_more_is_stale() -> None:
    core = new_core()
    update = good_update(core, base_version=0)
    kwargs: dict[str, Any] = {"issued_tasks": core.issued, "template": core.weights}
    assert check_update(update, version=3, max_staleness=3, **kwargs) == 3
    with pytest.raises(RejectedUpdate, match="stale: staleness 4 exceeds max_staleness 3"):
        check_update(update, version=4, max_staleness=3, **kwargs)


def test_check_arrays_accepts_an_exact_match() -> None:
    template: list[np.ndarray] = [np.zeros((2, 2), np.float16), np.zeros((), np.int64)]
    check_arrays([np.ones((2, 2), np.float16), np.array(7, np.int64)], template)


# ---------------------------------------------------------------- rejections in the core

@pytest.mark.parametrize("case", list(BAD_UPDATES))
def test_each_rejection_leaves_the_model_and_version_unchanged(case: str) -> None:
    # Given a core that has applied one update, and an update wrong in one way
    code, changes = BAD_UPDATES[case]
    core = new_core()
    advance(core, 1)
    bad = good_update(core, **changes)
    before = state(core)
    # When the core handles it
    outcome = core.handle(bad)
    # Then it is rejected with its code and reason, counted, and nothing else changed
    assert (outcome.kind, outcome.code, outcome.version) == ("rejected", code, before[0])
    assert outcome.reason and outcome.reason.startswith(f"{code}: ")
    assert core.rejected == {code: 1} and core.rejected_total == 1
    assert state(core) == before
    assert bad.update_id not in core.accepted_ids and bad.task_id not in core.in_flight


def test_a_stale_update_is_rejected_and_changes_nothing() -> None:
    # Given an update trained from version 0, and a core that moved on to version 4
    core = new_core(max_staleness=3)
    old = good_update(core, value=9.0)
    advance(core, 4)
    before = state(core)
    # When the old update arrives
    outcome = core.handle(old)
    # Then it is rejected as stale with the staleness in the reason, and nothing changed
    assert outcome.kind == "rejected" and outcome.code == "stale"
    assert "staleness 4 exceeds max_staleness 3" in (outcome.reason or "")
    assert core.rejected["stale"] == 1 and state(core) == before


def test_full_weights_sent_to_a_delta_strategy_are_rejected() -> None:
    core = new_core(strategy=FedBuff(buffer_size=2))
    before = state(core)
    outcome = core.handle(good_update(core, is_delta=False))
    assert outcome.code == "wrong_form" and state(core) == before


def test_an_undecodable_message_is_counted_and_changes_nothing() -> None:
    core = new_core()
    before = state(core)
    outcome = core.reject("decode_error", "message body is not valid msgpack")
    assert (outcome.kind, outcome.code) == ("rejected", "decode_error")
    assert core.rejected["decode_error"] == 1 and state(core) == before


def test_a_rejected_update_does_not_stop_the_next_good_one() -> None:
    core = new_core()
    assert core.handle(good_update(core, num_examples=0)).kind == "rejected"
    assert core.handle(good_update(core)).kind == "applied"
    assert (core.version, core.applied, core.rejected_total) == (1, 1, 1)


# ---------------------------------------------------------------- applying and duplicates

def test_an_applied_update_bumps_the_version_and_moves_the_model_as_fedasync_says() -> None:
    # Given a core at version 2 and an update trained from version 0 (staleness 2)
    core = new_core()
    update = good_update(core, value=4.0)
    advance(core, 2)
    before = [w.copy() for w in core.weights]
    expected = fedasync_step(before, list(update.weights), ALPHA, 2, STALENESS_FN)
    # When it is handled
    outcome = core.handle(update)
    # Then it is applied at staleness 2, the version is 3, and the weights are the FedAsync step
    assert (outcome.kind, outcome.version, outcome.staleness) == ("applied", 3, 2)
    assert core.version == 3 and core.applied == 3 and core.staleness_seen[-1] == 2
    for actual, wanted in zip(core.weights, expected, strict=True):
        assert actual.dtype == wanted.dtype and np.array_equal(actual, wanted)


def test_the_first_update_by_hand() -> None:
    # Given zeros and an update of ones at staleness 0: alpha_t = 0.5 * 1^-0.5 = 0.5
    core = new_core()
    core.handle(good_update(core, value=1.0))
    # Then every weight is 0.5
    assert all(np.array_equal(w, np.full(w.shape, 0.5, np.float32)) for w in core.weights)


def test_an_applied_update_is_remembered() -> None:
    core = new_core()
    update = good_update(core)
    core.handle(update)
    assert update.update_id in core.accepted_ids
    assert core.workers == {"w1"} and update.task_id not in core.in_flight


def test_a_duplicate_update_id_is_counted_and_never_applied_twice() -> None:
    # Given an update that has been applied once
    core = new_core()
    update = good_update(core)
    assert core.handle(update).kind == "applied"
    after_first = state(core)
    # When the same update is delivered again, several times
    outcomes = [core.handle(update) for _ in range(3)]
    # Then each is a counted duplicate and the model stays as it was after the first
    assert [o.kind for o in outcomes] == ["duplicate"] * 3
    assert all(o.version == 1 for o in outcomes)
    assert core.duplicates == 3 and core.applied == 1 and state(core) == after_first
    assert received(core) == 4 and core.rejected_total == 0


def test_a_duplicate_is_recognised_after_later_updates_were_applied() -> None:
    core = new_core()
    first = good_update(core)
    core.handle(first)
    advance(core, 2)
    before = state(core)
    assert core.handle(first).kind == "duplicate" and state(core) == before


def test_a_second_update_for_the_same_task_is_rejected() -> None:
    # Given two updates for one task with different update ids (say, a redelivered task)
    core = new_core()
    first = good_update(core, value=1.0)
    second = replace(first, update_id=new_id())
    # When both arrive, then only the first is applied (issue 14 item 2: one answer per task)
    assert core.handle(first).kind == "applied"
    outcome = core.handle(second)
    assert (outcome.kind, outcome.version, outcome.code) == ("rejected", 1,
                                                             "task_already_answered")
    assert core.applied == 1 and core.duplicates == 0


# ---------------------------------------------------------------- tasks

def test_issue_task_records_the_task_as_issued_and_in_flight() -> None:
    # Given a core at version 2
    core = new_core()
    advance(core, 2)
    # When a task is issued
    task = core.issue_task()
    # Then it is recorded, asks for at least the current version and carries the training plan
    assert task.task_id in core.issued and task.task_id in core.in_flight
    assert (task.job, task.min_version) == ("j", 2)
    assert (task.local_epochs, task.batch_size, task.learning_rate) == (3, 4, 0.1)
    assert task.send_delta is False


def test_tasks_get_unique_ids_and_all_stay_in_flight_until_answered() -> None:
    core = new_core()
    tasks = [core.issue_task() for _ in range(5)]
    assert len({t.task_id for t in tasks}) == 5 and set(core.in_flight) == {
        t.task_id for t in tasks}


def test_a_delta_strategy_asks_workers_for_deltas() -> None:
    assert new_core(strategy=FedBuff(buffer_size=2)).issue_task().send_delta is True


def test_an_answered_task_leaves_in_flight_but_stays_issued() -> None:
    core = new_core()
    update = good_update(core)
    core.handle(update)
    assert update.task_id not in core.in_flight and update.task_id in core.issued
