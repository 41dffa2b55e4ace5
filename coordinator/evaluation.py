"""Evaluation of global weights on the coordinator's held-out split (when it holds one), on a
thread of its own while the job runs (`Background`).

The built-in softmax classifiers are scored in numpy (accuracy and cross-entropy, milliseconds);
a user's learning task with its own compiled loss and metrics (`model.evaluate`). A coordinator
without data (a user task with no `load_eval_data`, or --no-central-eval) scores nothing here: the
job is then evaluated on the workers (coordinator/federated_eval.py).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from common import data, learning_task, models
from common.errors import ConfigError
from common.learning_task import LearningTask
from common.settings import CoordinatorSettings

log = logging.getLogger("fedmq.coordinator")


@dataclass(frozen=True)
class Score:
    """Metric name -> value; always a "loss", "accuracy" for classifiers."""

    metrics: dict[str, float]

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")

    @property
    def loss(self) -> float:
        return self.metrics["loss"]


class Evaluator:
    """Holds one Keras model instance; `score` loads weights into it and measures them."""

    def __init__(self, model: Any, x_test: np.ndarray | None, y_test: np.ndarray | None,
                 task: LearningTask | None = None) -> None:
        self.model = model
        self.x_test = x_test
        self.y_test = y_test
        self.task = task
        if task is not None:
            learning_task.compile_model(model, task, learning_rate=0.1)

    @property
    def has_data(self) -> bool:
        return self.x_test is not None

    def score(self, weights: list[np.ndarray]) -> Score | None:
        if self.x_test is None or self.y_test is None:
            return None
        self.model.set_weights(weights)
        if self.task is not None:
            scores = self.model.evaluate(self.x_test, self.y_test, verbose=0, return_dict=True)
            return Score({name: float(value) for name, value in scores.items()})
        probabilities = np.asarray(self.model(self.x_test, training=False), dtype=np.float64)
        picked = probabilities[np.arange(len(self.y_test)), self.y_test]
        loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
        accuracy = float(np.mean(np.argmax(probabilities, axis=1) == self.y_test))
        return Score({"accuracy": accuracy, "loss": loss})

    def accuracy_of(self, weights: list[np.ndarray]) -> float:
        """A classifier's held-out accuracy (benchmarks)."""
        score = self.score(weights)
        if score is None or score.accuracy is None:
            raise ValueError("this evaluator measures no held-out accuracy")
        return score.accuracy

    def save(self, weights: list[np.ndarray], path: str) -> None:
        """Write the weights as a complete `.keras` model file (its weights through a temporary
        file next to it, not through memory: see `weights_through_disk`)."""
        self.model.set_weights(weights)
        if self.task is None:
            models.compile_for_training(self.model, learning_rate=0.1)
        with weights_through_disk():
            self.model.save(path)


@contextlib.contextmanager
def weights_through_disk() -> Iterator[None]:
    """Make Keras 3 write a `.keras` file's weights to a temporary file and then into the
    archive, as it does when it finds memory short, instead of into memory and then into the
    archive, which holds two more copies of the model for a moment (a 1 GB model's final save
    set the coordinator's peak: docs/benchmarks.md). Keras has no option for it, so its
    memory check is answered for the time of the save; a Keras without that check saves as
    it does."""
    try:
        from keras.src.saving import saving_lib
    except ImportError:  # another Keras layout: nothing to choose
        yield
        return
    check = getattr(saving_lib, "is_memory_sufficient", None)
    if check is None:
        yield
        return
    saving_lib.is_memory_sufficient = lambda model: False
    try:
        yield
    finally:
        saving_lib.is_memory_sufficient = check


def for_job(settings: CoordinatorSettings) -> tuple[Evaluator, str, list[np.ndarray]]:
    """The job's evaluator, its model's name and initial weights; a model that cannot work on
    the held-out data is refused here, at start."""
    if settings.task:
        return _for_task(settings, learning_task.load(settings.task))
    name = models.resolve_name(settings.model, settings.dataset)
    model = models.build(name, settings.seed)
    weights = [np.asarray(w) for w in model.get_weights()]  # fresh arrays: no copy
    if not settings.central_eval:
        return Evaluator(model, None, None), name, weights
    x_test, y_test = held_out(settings)
    models.check_compatible(model, x_test, y_test)
    return Evaluator(model, x_test, y_test), name, weights


def _for_task(settings: CoordinatorSettings,
              task: LearningTask) -> tuple[Evaluator, str, list[np.ndarray]]:
    model = learning_task.build(task, settings.seed)
    weights = [np.asarray(w) for w in model.get_weights()]  # fresh arrays: no copy
    x_test = y_test = None
    if settings.central_eval and settings.eval_data_path:
        x_test, y_test = held_out(settings)
    elif settings.central_eval and task.load_eval_data is not None:
        x_test, y_test = (np.asarray(a) for a in task.load_eval_data(settings.seed))
    if x_test is not None and y_test is not None:
        learning_task.check_trainable(model, task, x_test, y_test)
        model.set_weights(weights)
    elif settings.validation_fraction <= 0:
        raise ConfigError(f"task {task.name!r} gives the coordinator no held-out data "
                          f"(load_eval_data or --eval-data-path): evaluate on the workers "
                          f"with --validation-fraction")
    return Evaluator(model, x_test, y_test, task), task.name, weights


def held_out(settings: CoordinatorSettings) -> tuple[np.ndarray, np.ndarray]:
    """The coordinator's evaluation data: its own file, else the built-in dataset's split."""
    if settings.eval_data_path:
        return data.load_file(data.file_for_shard(settings.eval_data_path, None),
                              settings.label_column)
    split = data.builtin_split(settings.dataset, settings.test_fraction, settings.seed)
    return split.x_test, split.y_test


@dataclass(frozen=True)
class Scored:
    """A finished evaluation: the version, the job clock when it was asked for, the score."""

    version: int
    at: float
    score: Score


class Background:
    """Evaluation on a thread of its own: evaluation never blocks intake.

    Profiled in `fedmq bench scale`, scoring every 5th version on the loop's thread took 4.5 %
    of the coordinator's wall time with a 4 MB model (more with a larger model or held-out set).
    The thread holds the evaluator's Keras model: while it runs, nothing else may use the
    evaluator (`idle` waits for it). Requests made while it is busy replace each other: only the
    newest waits, so a slow evaluation makes fewer points in the history, never a backlog.
    """

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.wake: Callable[[], None] = lambda: None  # called (from the thread) after a score
        self._lock = threading.Condition()
        self._wanted: tuple[int, list[np.ndarray], float] | None = None
        self._busy = False
        self._done: list[Scored] = []
        threading.Thread(target=self._serve, name="fedmq-evaluation", daemon=True).start()

    def submit(self, version: int, weights: list[np.ndarray], at: float) -> None:
        """Score `weights` (never mutated by the caller) when the thread is free."""
        with self._lock:
            self._wanted = (version, weights, at)
            self._lock.notify_all()

    def results(self) -> list[Scored]:
        """The evaluations finished since the last call, oldest first."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def idle(self) -> list[Scored]:
        """Wait until nothing is asked for or being scored; then `results`."""
        with self._lock:
            self._lock.wait_for(lambda: self._wanted is None and not self._busy)
        return self.results()

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._wanted is not None)
                assert self._wanted is not None
                (version, weights, at), self._wanted, self._busy = self._wanted, None, True
            try:
                score = self.evaluator.score(weights)
                done = [] if score is None else [Scored(version, at, score)]
            except Exception:  # one failed evaluation must not end the job's evaluations
                log.exception("evaluation of version %d failed", version)
                done = []
            del weights  # not kept while the thread waits: a version the core let go of
            with self._lock:
                self._busy, self._done = False, self._done + done
                self._lock.notify_all()
            self.wake()
