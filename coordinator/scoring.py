"""When the job's model is scored, and where the scores go (history, metrics, log, the job
record's time to target).

During the job the evaluation thread scores (evaluation.py's `Background`: evaluation never
blocks intake) and the loop records what it finished at each turn; at the start and the end the
loop's thread scores, once that thread is idle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from common import learning_task
from common.settings import CoordinatorSettings
from coordinator.evaluation import Background, Evaluator, Score, Scored
from coordinator.history import History
from coordinator.lifecycle import JobRecord
from coordinator.progress import Progress

log = logging.getLogger("fedmq.coordinator")


class Scoring:
    def __init__(self, settings: CoordinatorSettings, evaluator: Evaluator, progress: Progress,
                 record: JobRecord, counts: Callable[[], tuple[int, int]]) -> None:
        self.evaluator, self.progress, self.record = evaluator, progress, record
        self.every, self.target = settings.eval_every, settings.target_accuracy
        self.target_metric = settings.target_metric
        self.counts = counts  # (applied, rejected) so far, for the log
        self.background = Background(evaluator)

    def due(self, versions: Sequence[dict[str, Any]]) -> bool:
        """Whether one of these new versions is to be evaluated (every --eval-every)."""
        return any(fields["version"] % self.every == 0 for fields in versions)

    def later(self, version: int, weights: list[np.ndarray]) -> None:
        """Score on the evaluation thread; `finished` records it. (Nothing without held-out
        data: the job is evaluated on the workers.)"""
        if self.evaluator.has_data:
            self.background.submit(version, weights, self.record.elapsed())

    def now(self, history: History, version: int, weights: list[np.ndarray]) -> Score | None:
        """Score on this thread, once the evaluation thread is idle (the start and the end);
        None without held-out data."""
        self.finished(history, wait=True)
        score = self.evaluator.score(weights)
        if score is not None:
            self._record(history, Scored(version, self.record.elapsed(), score))
        return score

    def finished(self, history: History, wait: bool = False) -> list[Scored]:
        """Record the evaluations finished since the last call (`wait`: and the one in hand)."""
        done = self.background.idle() if wait else self.background.results()
        for scored in done:
            self._record(history, scored)
        return done

    def _record(self, history: History, scored: Scored) -> None:
        score = scored.score
        self.progress.evaluated(scored.version, score)
        history.score(scored.version, scored.at, score.accuracy, score.loss)
        target = score.metrics.get(self.target_metric)
        if target is not None:
            self.record.scored(target, self.target, scored.at,
                               learning_task.ordering(self.evaluator.task)(self.target_metric))
        applied, rejected = self.counts()
        shown = "  ".join(f"{name} {value:.4f}" for name, value in score.metrics.items())
        log.info("version %d  %s  applied %d  rejected %d  %.1fs", scored.version, shown,
                 applied, rejected, scored.at)
