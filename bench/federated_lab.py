"""An in-process lab for learning tasks (no broker): K workers each train from the same global
weights with the real Trainer (FedProx included), the real FedBuff strategy folds their deltas
(server optimizer included), and every step is evaluated on each worker's own validation split
(federated: example-weighted mean and worst worker) and on the held-out data, as a job would be.
All deltas of a step have staleness 0: this measures the learning, not the asynchrony.

    python -m bench.federated_lab --task examples.healthcare:breast_cancer --workers 4
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from common import data, learning_task, models
from common.learning_task import LearningTask
from coordinator.strategies import Contribution, FedBuff
from coordinator.strategies.server_optimizer import ServerOptimizer

Loader = Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Config:
    workers: int = 4
    rounds: int = 30
    local_epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 0.1
    server_lr: float = 1.0
    server_optimizer: str = "sgd"
    proximal_mu: float = 0.0
    validation_fraction: float = 0.2
    metric: str = "accuracy"
    seed: int = 0


def _evaluate(model: Any, weights: list[np.ndarray], x: np.ndarray,
              y: np.ndarray) -> dict[str, float]:
    model.set_weights(weights)
    return {k: float(v) for k, v in model.evaluate(x, y, verbose=0, return_dict=True).items()}


def run(task: LearningTask, config: Config, loader: Loader | None = None,
        held_out: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """One federated run; per round the federated mean, the worst worker and the held-out."""
    from worker.trainer import Trainer

    models.configure_tensorflow(1)
    load = loader or task.load_data
    assert load is not None, "the task (or the caller) must give the sites' data"
    sites = []
    for shard in range(config.workers):
        x, y = load(shard, config.workers, config.seed)
        train, val = data.validation_split(len(y), config.validation_fraction, config.seed,
                                           shard)
        sites.append((x[train], y[train], x[val], y[val]))
    model = learning_task.build(task, config.seed)
    weights = [np.array(w) for w in model.get_weights()]
    trainer = Trainer(model, sites[0][0], sites[0][1], task=task)
    judge = learning_task.build(task, config.seed)
    learning_task.compile_model(judge, task, 0.1)
    optimizer = None if config.server_optimizer == "sgd" else ServerOptimizer(
        config.server_optimizer)
    strategy = FedBuff(buffer_size=config.workers, server_lr=config.server_lr,
                       optimizer=optimizer)
    curve, started = [], time.monotonic()
    scores: dict[str, float] = {}
    for step in range(1, config.rounds + 1):
        new = None
        for x, y, _, _ in sites:
            trainer.x, trainer.y = x, y
            trained = trainer.train(weights, config.local_epochs, config.batch_size,
                                    config.learning_rate, config.proximal_mu).weights
            delta = [t - w for t, w in zip(trained, weights, strict=True)]
            new = strategy.submit(weights, Contribution(delta, True, 0, len(y))) or new
        assert new is not None
        weights = [np.asarray(w, dtype=o.dtype) for w, o in zip(new, weights, strict=True)]
        per_site = [(len(yv), _evaluate(judge, weights, xv, yv)[config.metric])
                    for _, _, xv, yv in sites]
        mean = sum(n * v for n, v in per_site) / sum(n for n, _ in per_site)
        worst = (min if task.better_is_higher(config.metric) else max)(v for _, v in per_site)
        row = {"round": step, "seconds": round(time.monotonic() - started, 2),
               "federated": round(mean, 4), "worst_worker": round(worst, 4)}
        if held_out is not None:
            scores = _evaluate(judge, weights, *held_out)
            row["held_out"] = round(scores[config.metric], 4)
        curve.append(row)
    final: dict[str, Any] = dict(curve[-1])
    if held_out is not None:  # every metric of the task on the held-out split, at the end
        final["held_out_metrics"] = {name: round(value, 4) for name, value in scores.items()}
    return {"config": config.__dict__, "curve": curve, "final": final}


def central(task: LearningTask, x: np.ndarray, y: np.ndarray, held_out: tuple[np.ndarray, ...],
            epochs: int, batch_size: int, learning_rate: float, metric: str,
            seed: int = 0) -> dict[str, float]:
    """The same model trained on the pooled sites' data: what federated learning is held to."""
    from worker.trainer import Trainer

    model = learning_task.build(task, seed)
    trainer = Trainer(model, x, y, task=task)
    weights = trainer.train([np.array(w) for w in model.get_weights()], epochs, batch_size,
                            learning_rate).weights
    return _evaluate(model, weights, held_out[0], held_out[1])


def rounds_to(curve: list[dict[str, Any]], target: float, key: str = "federated") -> int | None:
    return next((row["round"] for row in curve if row[key] >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    for name, value in Config().__dict__.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = vars(parser.parse_args())
    task = learning_task.load(args.pop("task"))
    config = Config(**args)
    held = None if task.load_eval_data is None else task.load_eval_data(config.seed)
    print(json.dumps(run(task, config, held_out=held)["final"]))


if __name__ == "__main__":
    main()
