"""When a job has done enough: its target reached (with --stop-at-target), its time or its
updates used up, or a privacy budget that one more update (or buffer) would exceed."""

from __future__ import annotations

import logging

from common.settings import CoordinatorSettings
from coordinator.admission import Admission
from coordinator.core import CoordinatorCore
from coordinator.lifecycle import JobRecord

log = logging.getLogger("fedmq.coordinator")


class StopRule:
    def __init__(self, settings: CoordinatorSettings, record: JobRecord, core: CoordinatorCore,
                 admission: Admission) -> None:
        self.settings, self.record, self.core, self.admission = settings, record, core, admission
        self.reason: str | None = None  # why a budget stopped the job early (summary.json)

    def done(self) -> bool:
        settings, record = self.settings, self.record
        reached = settings.stop_at_target and record.time_to_target is not None
        out_of_time = settings.max_seconds is not None and record.workers_ready and \
            record.elapsed() >= settings.max_seconds
        return reached or out_of_time or self.core.applied >= settings.max_updates or \
            self._out_of_budget()

    def _out_of_budget(self) -> bool:
        reason = self.admission.budget_stop(self.core.version)
        if reason is not None and self.reason is None:
            self.reason = reason
            log.warning("%s", reason)
        return reason is not None
