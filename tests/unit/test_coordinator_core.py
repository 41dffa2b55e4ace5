"""The coordinator's decisions without a broker: validation, exactly-once, versions, counters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.messages import WeightUpdate, new_id
from common.settings import TrainingSettings
from coordinator.core import CoordinatorCore
from coordinator.strategies import FedAsync, FedBuff, fedasync_step, staleness_polynomial

ALPHA = 0.5


def fresh_core(strategy: object | None = None, max_staleness: int = 5) -> CoordinatorCore:
    weights = [np.zeros((2, 2), np.float32), np.zeros(2, np.float32)]
    return CoordinatorCore(
        weights=weights, max_staleness=max_staleness, training=TrainingSettings(),
        strategy=strategy or FedAsync(ALPHA, lambda t: staleness_polynomial(t, 0.5)))  # type: ignore[arg-type]


def update_for(core: CoordinatorCore, value: float = 1.0, **changes: object) -> WeightUpdate:
    task = core.issue_task()
    update = WeightUpdate(update_id=new_id(), worker_id="w", task_id=task.task_id,
                          base_version=core.version, num_examples=10, train_seconds=0.1,
                          weights=tuple(np.full_like(w, value) for w in core.weights),
                          is_delta=core.strategy.wants_delta)
    return replace(update, **changes)  # type: ignore[arg-type]


def snapshot(core: CoordinatorCore) -> tuple[int, list[bytes]]:
    return core.version, [w.tobytes() for w in core.weights]


BAD = {
    "unknown_task": dict(task_id="never-issued"),
    "future_version": dict(base_version=3),
    "bad_version": dict(base_version=-1),
    "bad_num_examples": dict(num_examples=0),
    "shape_mismatch": dict(weights=(np.zeros((2, 2), np.float32),)),
    "dtype_mismatch": dict(weights=(np.zeros((2, 2), np.float64), np.zeros(2, np.float32))),
    "wrong shape": dict(weights=(np.zeros((2, 3), np.float32), np.zeros(2, np.float32))),
    "NaN": dict(weights=(np.full((2, 2), np.nan, np.float32), np.zeros(2, np.float32))),
    "Inf": dict(weights=(np.zeros((2, 2), np.float32), np.array([0, np.inf], np.float32))),
}
CODES = {"wrong shape": "shape_mismatch", "NaN": "non_finite", "Inf": "non_finite"}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_update_is_rejected_with_its_code_and_changes_nothing(case: str) -> None:
    # Given a core and an update that is wrong in one way
    core = fresh_core()
    bad = update_for(core, **BAD[case])
    before = snapshot(core)
    # When it is handled
    outcome = core.handle(bad)
    # Then it is rejected with its code and reason, counted, and the model is untouched
    assert outcome.kind == "rejected" and outcome.code == CODES.get(case, case)
    assert outcome.reason and outcome.reason.startswith(outcome.code)
    assert core.rejected[outcome.code] == 1
    assert snapshot(core) == before


def test_stale_updates_are_rejected() -> None:
    core = fresh_core(max_staleness=2)
    stale = update_for(core)
    for _ in range(3):
        assert core.handle(update_for(core)).kind == "applied"
    outcome = core.handle(stale)
    assert outcome.code == "stale" and "staleness 3" in (outcome.reason or "")


def test_an_applied_update_bumps_the_version_exactly_as_fedasync_says() -> None:
    core = fresh_core()
    core.handle(update_for(core, 2.0))
    update = update_for(core, 4.0, base_version=0)  # staleness 1
    expected = fedasync_step(core.weights, list(update.weights), ALPHA, 1,
                             lambda t: staleness_polynomial(t, 0.5))
    outcome = core.handle(update)
    assert (outcome.kind, outcome.version, outcome.staleness) == ("applied", 2, 1)
    assert all(np.array_equal(a, b) for a, b in zip(core.weights, expected, strict=True))


def test_duplicates_are_counted_and_never_applied_twice() -> None:
    core = fresh_core()
    update = update_for(core)
    assert core.handle(update).kind == "applied"
    after_first = snapshot(core)
    for _ in range(5):
        assert core.handle(update).kind == "duplicate"
    assert core.duplicates == 5 and core.applied == 1 and snapshot(core) == after_first


def test_a_task_is_answered_once_a_second_answer_is_rejected() -> None:
    # Given a task whose update was applied (issue 14 item 2: one answer per task, plain too)
    core = fresh_core()
    first = update_for(core)
    assert core.handle(first).kind == "applied"
    # When another update answers it, under the same worker name or another one
    again = core.handle(replace(first, update_id=new_id()))
    other = core.handle(replace(first, update_id=new_id(), worker_id="mallory"))
    # Then both are rejected with their reasons, and only the first counts
    assert (again.code, other.code) == ("task_already_answered", "task_not_issued_to_worker")
    assert core.applied == 1 and core.version == 1


def test_issued_tasks_are_in_flight_until_their_update_arrives() -> None:
    core = fresh_core()
    update = update_for(core)
    assert update.task_id in core.in_flight and update.task_id in core.issued
    core.handle(update)
    assert update.task_id not in core.in_flight and update.task_id in core.issued


def test_fedbuff_counts_updates_as_applied_when_the_buffer_flushes() -> None:
    core = fresh_core(FedBuff(buffer_size=3))
    assert core.issue_task().send_delta
    kinds = [core.handle(update_for(core)).kind for _ in range(3)]
    assert kinds == ["buffered", "buffered", "applied"]
    assert (core.applied, core.version) == (3, 1)


def test_fedbuff_rejects_full_weights() -> None:
    core = fresh_core(FedBuff(buffer_size=3))
    assert core.handle(update_for(core, is_delta=False)).code == "wrong_form"


@given(st.integers(0, 30), st.integers(0, 30))
def test_stale_beyond_the_limit_is_never_applied(limit: int, versions: int) -> None:
    core = fresh_core(max_staleness=limit)
    old = update_for(core)
    for _ in range(versions):
        core.handle(update_for(core))
    outcome = core.handle(old)
    assert (outcome.kind == "applied") == (versions <= limit)
