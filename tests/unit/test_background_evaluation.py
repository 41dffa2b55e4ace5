"""Evaluation on a thread of its own: the caller never waits for a score, a slow evaluation
skips versions instead of building a backlog, and `idle` hands over every finished score."""

from __future__ import annotations

import threading
import time
import weakref

import numpy as np

from coordinator.evaluation import Background, Evaluator, Score


class SlowEvaluator(Evaluator):
    """Scores a model as its first weight, once `gate` lets it; records what it scored."""

    def __init__(self) -> None:
        self.gate, self.started = threading.Event(), threading.Event()
        self.scored: list[float] = []

    def score(self, weights: list[np.ndarray]) -> Score:
        self.started.set()
        assert self.gate.wait(10)
        self.scored.append(float(weights[0][0]))
        return Score({"accuracy": float(weights[0][0]), "loss": 0.0})


def model(value: float) -> list[np.ndarray]:
    return [np.full(1, value, np.float32)]


def test_submitting_never_waits_and_only_the_newest_request_waits_for_a_busy_thread() -> None:
    # Given an evaluation thread busy scoring version 1 (its evaluator held)
    evaluator = SlowEvaluator()
    background = Background(evaluator)
    woken = threading.Event()
    background.wake = woken.set
    background.submit(1, model(0.1), at=1.0)
    assert evaluator.started.wait(10)
    # When versions 2, 3 and 4 are asked for meanwhile
    began = time.monotonic()
    for version in (2, 3, 4):
        background.submit(version, model(version / 10), at=float(version))
    # Then asking returned at once, nothing is finished yet
    assert time.monotonic() - began < 0.5 and background.results() == []
    # When the evaluator is let go
    evaluator.gate.set()
    done = background.idle()
    # Then version 1 and the newest request (4) were scored, 2 and 3 skipped, in order, with the
    # job-clock time of their request, and the loop was woken
    assert [(s.version, s.at, s.score.accuracy) for s in done] == [
        (1, 1.0, np.float32(0.1).item()), (4, 4.0, np.float32(0.4).item())]
    assert woken.is_set() and background.results() == []


def test_a_failed_evaluation_does_not_stop_the_next() -> None:
    # Given an evaluator that fails once
    class Flaky(SlowEvaluator):
        def score(self, weights: list[np.ndarray]) -> Score:
            if not self.scored:
                self.scored.append(-1.0)
                raise RuntimeError("out of memory")
            return super().score(weights)

    evaluator = Flaky()
    evaluator.gate.set()
    background = Background(evaluator)
    # When two versions are scored one after the other
    background.submit(1, model(0.1), at=1.0)
    assert background.idle() == []
    background.submit(2, model(0.2), at=2.0)
    # Then the second is scored
    assert [s.version for s in background.idle()] == [2]


def test_the_thread_keeps_no_weights_once_it_has_scored_them() -> None:
    # Given an evaluation thread that scored version 1
    evaluator = SlowEvaluator()
    evaluator.gate.set()
    background = Background(evaluator)
    weights = model(0.1)
    alive = weakref.ref(weights[0])
    background.submit(1, weights, at=1.0)
    assert [s.version for s in background.idle()] == [1]
    # When the caller lets go of those weights (the core made a newer version)
    del weights
    # Then nothing keeps them while the thread waits (a large model's old version)
    assert alive() is None
