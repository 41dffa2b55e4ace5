"""Issue 14 item 2: the norm bound, one answer per task, no non-finite step (no broker)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from common.messages import WeightUpdate, new_id
from common.settings import TrainingSettings
from coordinator import checkpoint
from coordinator.core import CoordinatorCore
from coordinator.norm_guard import (
    MIN_HISTORY,
    WINDOW,
    NormGuard,
    norm_bound,
    reference_norm,
    update_norm,
)
from coordinator.strategies import FedAsync, staleness_constant

CURRENT = [np.array([[1.0, 2.0], [2.0, 0.0]], np.float32), np.array([0.0, 4.0], np.float32)]


def test_a_full_weight_update_is_measured_against_the_current_model() -> None:
    # Given the model [[1,2],[2,0]],[0,4] (norm 5) and an update 3 above it in one weight
    update = [CURRENT[0] + np.array([[3.0, 0], [0, 0]], np.float32),
              CURRENT[1] + np.array([0, 4], np.float32)]
    # Then its norm is that of the delta (3, 4): 5; a delta is measured as it is
    assert update_norm(update, False, CURRENT) == pytest.approx(5.0)
    assert update_norm(CURRENT, True, CURRENT) == pytest.approx(5.0)


def test_the_bound_is_the_factor_times_the_reference_then_the_median() -> None:
    # Given a factor of 10 and a reference norm of 5
    # Then with fewer than MIN_HISTORY norms the bound is 10 x 5
    assert norm_bound([1.0] * (MIN_HISTORY - 1), 10, 5.0) == 50.0
    # And then 10 x the median of the last WINDOW: median(1, 2, 3, 100, 4) = 3 -> 30
    assert norm_bound([1.0, 2.0, 3.0, 100.0, 4.0], 10, 5.0) == 30.0
    old = [1000.0] * 10 + [2.0] * WINDOW  # only the last WINDOW count
    assert norm_bound(old, 10, 5.0) == 20.0
    # And a factor of 0 means no bound
    assert norm_bound([1.0] * 10, 0, 5.0) == math.inf


def test_the_reference_is_the_larger_of_the_model_norm_and_local_dp_noise() -> None:
    # Given 6 parameters of norm 5
    assert reference_norm(CURRENT) == pytest.approx(5.0)
    # Then with local DP (clip 1, multiplier 2) a noised delta's norm 1 x (1 + 2 sqrt 6) wins
    assert reference_norm(CURRENT, 1.0, 2.0) == pytest.approx(1 + 2 * math.sqrt(6))


def test_the_guard_names_the_numbers_when_it_refuses() -> None:
    guard = NormGuard(factor=10, reference=5.0)
    assert guard.exceeded(49.0) is None
    reason = guard.exceeded(51.0)
    assert reason is not None and "51" in reason and "bound 50" in reason
    assert guard.exceeded(math.inf) is not None
    for norm in (1.0, 2.0, 3.0, 4.0, 5.0):
        guard.accept(norm)
    assert guard.bound == 30.0 and "median 3" in str(guard.exceeded(31.0))
    assert guard.max_ratio == pytest.approx(5.0 / 50.0)


def core_with_guard(factor: float = 10.0) -> CoordinatorCore:
    weights = [np.array(w) for w in CURRENT]
    return CoordinatorCore(weights=weights, strategy=FedAsync(1.0, staleness_constant),
                           max_staleness=5, training=TrainingSettings(),
                           norm_guard=NormGuard(factor, reference_norm(weights)))


def answer(core: CoordinatorCore, delta: float, worker: str = "w") -> WeightUpdate:
    task = core.issue_task()
    return WeightUpdate(update_id=new_id(), worker_id=worker, task_id=task.task_id,
                        base_version=core.version, num_examples=10, train_seconds=0.1,
                        weights=tuple((w + delta).astype(w.dtype) for w in core.weights))


def test_a_huge_update_is_rejected_by_the_norm_bound_and_changes_nothing() -> None:
    # Given a core whose bound starts at 10 x the model's norm 5 = 50
    core = core_with_guard()
    before = [w.copy() for w in core.weights]
    # When every weight comes 3e38 away (finite in float32), or 30 away (norm 30 sqrt 6 = 73)
    huge = core.handle(answer(core, 3.0e38))
    large = core.handle(answer(core, 30.0))
    # Then both are rejected as norm_too_large, in flight no more, and the model is unchanged
    assert (huge.code, large.code) == ("norm_too_large", "norm_too_large")
    assert "bound 50" in str(large.reason)
    assert core.version == 0 and not core.in_flight and core.rejected["norm_too_large"] == 2
    assert all((a == b).all() for a, b in zip(before, core.weights, strict=True))
    # And a plausible update is still applied, and its norm remembered (0.1 x sqrt 6)
    assert core.handle(answer(core, 0.1)).kind == "applied"
    assert core.norm_guard is not None
    assert core.norm_guard.history == [pytest.approx(0.1 * math.sqrt(6), rel=1e-5)]


def test_with_factor_zero_nothing_is_bounded() -> None:
    core = core_with_guard(factor=0.0)
    assert core.handle(answer(core, 1000.0)).kind == "applied"


@pytest.mark.filterwarnings("ignore:overflow")
def test_a_step_whose_result_is_not_finite_is_refused() -> None:
    # Given a core without a norm bound and a model at float32's edge
    core = core_with_guard(factor=0.0)
    core.weights = [np.full_like(w, 3.0e38) for w in core.weights]
    # When an update would take it past float32's range (FedAsync alpha 1 x 2 x 3e38 overflow)
    update = answer(core, 0.0)
    update = replace(update, weights=tuple(np.full_like(w, 3.0e38) * 1.0 for w in core.weights),
                     is_delta=True)
    core.strategy.wants_delta = True
    outcome = core.handle(update)
    # Then it is rejected, nothing changes, and the task is not bound (its worker may answer)
    assert outcome.code == "non_finite_result" and core.version == 0
    assert update.task_id not in core.task_owner and np.isfinite(core.weights[0]).all()


def test_a_redelivered_update_is_a_duplicate_not_a_second_answer() -> None:
    # Given an applied update
    core = core_with_guard()
    update = answer(core, 0.1)
    assert core.handle(update).kind == "applied"
    # When the broker redelivers it (same update id): claim lets it through, handle ignores it
    core.claim(update)
    assert core.handle(update).kind == "duplicate"
    # But another update for the task is a second answer
    with pytest.raises(Exception, match="task_already_answered"):
        core.claim(replace(update, update_id=new_id()))
    assert core.duplicates == 1 and core.rejected_total == 0


def test_a_rejected_update_does_not_take_the_task_from_its_worker() -> None:
    # Given a forged, too large answer to a task
    core = core_with_guard()
    forged = answer(core, 1000.0, worker="mallory")
    assert core.handle(forged).code == "norm_too_large"
    # When the worker that trained it answers
    honest = replace(forged, update_id=new_id(), worker_id="w",
                     weights=tuple((w + 0.1).astype(w.dtype) for w in core.weights))
    # Then its update is applied and the task is bound to it
    assert core.handle(honest).kind == "applied" and core.task_owner[honest.task_id] == "w"


def test_the_norm_history_survives_a_checkpoint_and_old_ones_load(tmp_path: Path) -> None:
    # Given a core with 6 accepted norms, checkpointed
    core = core_with_guard()
    for _ in range(6):
        core.handle(answer(core, 0.1))
    path = tmp_path / "checkpoint.npz"
    checkpoint.save(path, {"core": core.state()})
    # When a fresh core loads it
    resumed = core_with_guard()
    resumed.load_state(checkpoint.load(path)["core"])
    # Then it keeps the bound
    assert resumed.norm_guard is not None and core.norm_guard is not None
    assert resumed.norm_guard.history == pytest.approx(core.norm_guard.history)
    assert resumed.norm_guard.bound == pytest.approx(core.norm_guard.bound)
    # And a checkpoint from before the bound (no norm_guard key) still loads, bound at its start
    old = core.state()
    del old["norm_guard"]
    checkpoint.save(path, {"core": old})
    older = core_with_guard()
    older.load_state(checkpoint.load(path)["core"])
    assert older.norm_guard is not None and older.norm_guard.history == []
    assert older.norm_guard.bound == pytest.approx(50.0)
