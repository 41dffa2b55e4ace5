"""An update that arrives once the job has ended (after its drain: a task taken back, abandoned
or trained twice) is refused as `job_finished` and recorded with its id, so every update the
broker confirmed is decided; one accepted before is still only a duplicate."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from common import wire
from common.amqp import Delivery
from common.codec import Codec
from common.messages import WeightUpdate, new_id
from common.settings import CoordinatorSettings
from coordinator.admission import Admission
from coordinator.commit import Commit
from coordinator.core import CoordinatorCore
from coordinator.lifecycle import JobRecord
from coordinator.receiving import Receiver
from coordinator.strategies import make_strategy


class Acks:
    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, delivery: Delivery) -> None:
        self.acked.append(delivery.tag)


def receiver(tmp_path: Path) -> tuple[Receiver, CoordinatorCore, list[str]]:
    settings = CoordinatorSettings(out=tmp_path, checkpoint=False, max_update_norm_factor=0)
    core = CoordinatorCore.for_job(settings, [np.zeros((3, 2), np.float32)],
                                   make_strategy(settings))
    dead: list[str] = []
    quiet: Any = SimpleNamespace(event=lambda *a, **k: None, received=lambda: None,
                                 outcome=lambda *a: None,
                                 dead_letter=lambda _b, _d, outcome: dead.append(outcome.code))
    commit = Commit(None, lambda *_: None, lambda *_: None, lambda: (0, []))
    made = Receiver(settings, Codec(1 << 20), Admission.from_settings(settings), core, quiet,
                    commit, quiet, JobRecord(), lambda *_: None)
    return made, core, dead


def body(core: CoordinatorCore, update_id: str | None = None) -> tuple[WeightUpdate, bytes]:
    task = core.issue_task()
    update = WeightUpdate(update_id=update_id or new_id(), worker_id="w1", task_id=task.task_id,
                          base_version=core.version, num_examples=10, train_seconds=0.1,
                          weights=(np.full((3, 2), 0.1, np.float32),))
    return update, wire.encode(update)


def test_an_update_after_the_end_is_refused_and_recorded_a_redelivery_is_a_duplicate(
        tmp_path: Path) -> None:
    # Given a job whose receiver accepted one update, then ended
    made, core, dead = receiver(tmp_path)
    broker = Acks()
    first, first_body = body(core)
    made.on_update(broker, Delivery(first_body, 1, "updates"))  # type: ignore[arg-type]
    assert first.update_id in core.accepted_ids
    made.closed = True
    # When a late update and a redelivery of the accepted one arrive
    late, late_body = body(core)
    made.on_update(broker, Delivery(late_body, 2, "updates"))  # type: ignore[arg-type]
    made.on_update(broker, Delivery(first_body, 3, "updates"))  # type: ignore[arg-type]
    # Then the late one is refused with its reason and in the ledger, the other a duplicate,
    # both acked, and the model holds only the first
    assert core.rejected_ids.get(late.update_id) == "job_finished" and dead == ["job_finished"]
    assert core.duplicates == 1 and core.applied == 1 and broker.acked == [1, 2, 3]
