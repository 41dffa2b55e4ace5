"""Federated evaluation on the coordinator's side: ask the workers to evaluate global versions on
their own validation splits, and combine what they report.

Requests (`EvalRequest`, no weights) go out on the evaluations fanout every --eval-every versions;
each worker chosen by the sample evaluates the version (or the fresher one it holds) when it is
free, so evaluation never waits for training nor training for evaluation. Reports come back to
`fedmq.<job>.eval.reports` and are grouped by the version asked for: a round's metric is the mean
of its workers' metrics weighted by their validation examples, and its worst worker is the one
with the lowest value of a higher-is-better metric (the highest of a lower-is-better one).
A round is never closed: a late report updates it. Rounds live in memory; what they showed is in
the history (checkpointed), so a restarted coordinator goes on from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from common.messages import EvalReport

log = logging.getLogger("fedmq.coordinator")
KEEP_ROUNDS = 64  # rounds held for late reports; older ones are done with


@dataclass(frozen=True)
class RoundSummary:
    """One evaluated version, as its workers saw it."""

    version: int
    workers: int
    examples: int
    mean: dict[str, float]                 # metric -> example-weighted mean
    worst: dict[str, tuple[float, str]]    # metric -> (value, worker id)
    per_worker: dict[str, dict[str, float]]


def combine(version: int, reports: list[EvalReport],
            higher_is_better: Callable[[str], bool]) -> RoundSummary:
    """Weighted means and worst workers of the metrics every report has."""
    names = set.intersection(*(set(r.metrics) for r in reports)) if reports else set()
    total = sum(r.num_examples for r in reports)
    mean = {name: sum(r.metrics[name] * r.num_examples for r in reports) / total
            for name in sorted(names)} if total else {}
    worst: dict[str, tuple[float, str]] = {}
    for name in sorted(names):
        pick = min if higher_is_better(name) else max
        chosen = pick(reports, key=lambda r: r.metrics[name])  # noqa: B023
        worst[name] = (chosen.metrics[name], chosen.worker_id)
    return RoundSummary(version, len(reports), total, mean, worst,
                        {r.worker_id: dict(r.metrics) for r in reports})


class FederatedEvaluation:
    """The reports of recent rounds, one per worker and round (a repeated one replaces)."""

    def __init__(self, higher_is_better: Callable[[str], bool]) -> None:
        self.higher_is_better = higher_is_better
        self.rounds: dict[int, dict[str, EvalReport]] = {}
        self.refused = 0

    def add(self, report: EvalReport) -> RoundSummary | None:
        """Record a report; the summary of its round now (None: refused)."""
        problem = self._problem(report)
        if problem is not None:
            self.refused += 1
            log.warning("evaluation report of %s refused: %s", report.worker_id, problem)
            return None
        self.rounds.setdefault(report.request_version, {})[report.worker_id] = report
        for old in sorted(self.rounds)[:-KEEP_ROUNDS]:
            del self.rounds[old]
        return self.summary(report.request_version)

    @staticmethod
    def _problem(report: EvalReport) -> str | None:
        if report.num_examples <= 0:
            return f"{report.num_examples} examples"
        if "loss" not in report.metrics:
            return "no loss"
        if not all(v == v and abs(v) != float("inf") for v in report.metrics.values()):
            return "metrics not finite"
        return None

    def summary(self, version: int) -> RoundSummary | None:
        reports = list(self.rounds.get(version, {}).values())
        if not reports:
            return None
        return combine(version, reports, self.higher_is_better)

    def latest(self) -> RoundSummary | None:
        return self.summary(max(self.rounds)) if self.rounds else None


def primary(metrics: dict[str, float], wanted: str) -> str:
    """The metric a job is judged on: `wanted` if measured, else the loss."""
    return wanted if wanted in metrics else "loss"
