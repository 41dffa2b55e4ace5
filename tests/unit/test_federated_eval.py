"""Federated evaluation's pure parts: the example-weighted mean and the worst worker of a round
(coordinator/federated_eval.py), the workers' sampling (worker/local_evaluation.py) and the
history's federated columns through a checkpoint."""

from __future__ import annotations

import math

import pytest

from common.learning_task import LearningTask
from common.messages import EvalReport
from coordinator.federated_eval import FederatedEvaluation, combine, primary
from coordinator.history import History
from worker.local_evaluation import sampled

ORDER = LearningTask(build_model=lambda: None).better_is_higher


def report(worker: str, examples: int, version: int = 5, **metrics: float) -> EvalReport:
    return EvalReport(worker_id=worker, request_version=version, version=version,
                      num_examples=examples, metrics=metrics)


def test_a_round_is_weighted_by_examples_and_names_its_worst_worker() -> None:
    # Given three sites of 10, 30 and 60 validation examples
    reports = [report("a", 10, accuracy=0.9, loss=0.2), report("b", 30, accuracy=0.5, loss=0.9),
               report("c", 60, accuracy=0.8, loss=0.4)]
    # When the round is combined
    summary = combine(5, reports, ORDER)
    # Then the means are weighted by hand: (9 + 15 + 48) / 100 and (2 + 27 + 24) / 100
    assert summary.mean["accuracy"] == pytest.approx(0.72)
    assert summary.mean["loss"] == pytest.approx(0.53)
    # And the worst worker is the lowest accuracy and the highest loss
    assert summary.worst["accuracy"] == (0.5, "b") and summary.worst["loss"] == (0.9, "b")
    assert summary.workers == 3 and summary.examples == 100


def test_only_metrics_every_report_has_are_combined() -> None:
    summary = combine(1, [report("a", 1, loss=1.0, auc=0.7), report("b", 1, loss=3.0)], ORDER)
    assert set(summary.mean) == {"loss"} and summary.mean["loss"] == 2.0


def test_reports_are_one_per_worker_and_round_and_bad_ones_are_refused() -> None:
    rounds = FederatedEvaluation(ORDER)
    assert rounds.add(report("a", 10, loss=1.0)) is not None
    # a worker answering the same round again replaces its report
    assert rounds.add(report("a", 10, loss=0.5)).workers == 1  # type: ignore[union-attr]
    assert rounds.summary(5).mean["loss"] == 0.5  # type: ignore[union-attr]
    # no examples, no loss, or a non-finite metric is refused and counted
    for bad in (report("b", 0, loss=1.0), report("b", 5, auc=0.5),
                report("b", 5, loss=math.nan), report("b", 5, loss=1.0, auc=math.inf)):
        assert rounds.add(bad) is None
    assert rounds.refused == 4 and rounds.latest().workers == 1  # type: ignore[union-attr]


def test_the_primary_metric_falls_back_to_the_loss() -> None:
    assert primary({"loss": 1.0, "accuracy": 0.5}, "accuracy") == "accuracy"
    assert primary({"loss": 1.0, "mae": 0.5}, "accuracy") == "loss"


def test_sampling_picks_about_the_share_and_the_same_workers_every_time() -> None:
    workers = [f"site-{i}" for i in range(2000)]
    picked = [w for w in workers if sampled(w, 10, 0.25)]
    assert 0.22 < len(picked) / len(workers) < 0.28
    assert picked == [w for w in workers if sampled(w, 10, 0.25)]
    assert all(sampled(w, 10, 1.0) for w in workers)


def test_the_federated_columns_survive_a_checkpoint() -> None:
    # Given a history with a federated round on version 2 and none on version 1
    history = History()
    history.add(1, 1.0, 0, "w")
    history.add(2, 2.0, 0, "w")
    history.federated(2, 2.5, metric=0.7, loss=0.4, worst=0.55, worst_worker="site-3", workers=4)
    # When it goes through the checkpoint's columns
    back = History.from_columns(history.columns())
    # Then every cell comes back
    assert back.rows == history.rows
    assert back.rows[1]["worst_worker"] == "site-3" and back.rows[0]["fed_metric"] == ""
    assert history.curve("worst_metric") == [(2.0, 0.55)]


def test_a_checkpoint_from_before_federated_evaluation_still_loads() -> None:
    history = History()
    history.add(1, 1.0, 0, "w")
    old = {k: v for k, v in history.columns().items()
           if k not in ("fed_metric", "fed_loss", "worst_metric", "worst_worker",
                        "eval_workers")}
    assert History.from_columns(old).rows == history.rows
