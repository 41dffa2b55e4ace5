"""The coordinator's metrics count what the coordinator decided, including FedBuff flushes that
apply several buffered updates in one new version."""

from __future__ import annotations

import threading
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common.messages import WeightUpdate
from common.settings import CoordinatorSettings
from coordinator.core import Outcome
from coordinator.evaluation import Score
from coordinator.progress import Progress


class RecordedScalars:
    """Stands in for the TensorBoard writer (which needs TensorFlow)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []

    def write(self, step: int, **values: float) -> None:
        self.rows.append((step, values))

    def close(self) -> None:
        pass


def update(seconds: float) -> WeightUpdate:
    return WeightUpdate(update_id="u", worker_id="w", task_id="t", base_version=0,
                        num_examples=1, train_seconds=seconds, weights=())


def samples(progress: Progress) -> dict[str, float]:
    text = generate_latest(progress.metrics.registry).decode()
    return {s.name + str(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_fedbuff_flush_counts_every_update_it_applies(tmp_path: Path) -> None:
    # Given a coordinator's progress (no metrics endpoint)
    scalars = RecordedScalars()
    progress = Progress(CoordinatorSettings(out=tmp_path), scalars)  # type: ignore[arg-type]

    # When three updates are buffered, a fourth flushes the buffer, and one is rejected
    for staleness in (0, 1, 2):
        progress.received()
        progress.outcome(Outcome("buffered", 0, staleness=staleness), update(1.5))
    progress.received()
    progress.outcome(Outcome("applied", 1, staleness=0), update(0.5))
    progress.new_version(1, applied_total=4)
    progress.received()
    progress.outcome(Outcome("rejected", 1, code="stale", reason="stale: 60 > 50"), update(2.0))
    progress.evaluated(1, Score({"accuracy": 0.5, "loss": 1.25}))
    progress.finish(threading.Event())

    # Then the metrics show four applied, one rejected by reason, four staleness observations
    got = samples(progress)
    assert got["fedmq_updates_received_total[]"] == 5
    assert got["fedmq_updates_applied_total[]"] == 4
    assert got["fedmq_updates_rejected_total[('reason', 'stale')]"] == 1
    assert got["fedmq_update_staleness_count[]"] == 4
    assert got["fedmq_update_staleness_sum[]"] == 3
    assert got["fedmq_worker_train_seconds_count[]"] == 5
    assert got["fedmq_global_version[]"] == 1
    assert got["fedmq_eval_accuracy[]"] == 0.5 and got["fedmq_eval_loss[]"] == 1.25
    # And TensorBoard gets one staleness point per accepted update and the evaluation
    assert [step for step, values in scalars.rows if "staleness" in values] == [1, 2, 3, 4]
    assert (1, {"eval_accuracy": 0.5, "eval_loss": 1.25}) in scalars.rows
