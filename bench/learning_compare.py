"""Measured for docs/benchmarks.md ("Learning tasks"), with bench/federated_lab.py (in process,
no broker):

- `digits`: 8 workers on Dirichlet(0.1) shards of digits: plain FedBuff, FedBuff + server Adam,
  FedProx; rounds and seconds to a federated accuracy target, final federated accuracy and the
  worst worker's;
- `examples`: the three examples (examples/) federated against the same model trained centrally
  on the pooled sites' data for as many epochs.

    python -m bench.learning_compare digits --out results/learning-digits.json
    python -m bench.learning_compare examples --out results/learning-examples.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.federated_lab import Config, central, rounds_to, run
from common import data, models
from common.learning_task import LearningTask, load

DIGITS_VARIANTS: dict[str, dict[str, Any]] = {
    "fedbuff": {}, "fedbuff+adam": {"server_optimizer": "adam", "server_lr": 0.03},
    "fedprox mu=0.1": {"proximal_mu": 0.1}}
EXAMPLES = {  # task, metric, learning rate
    "healthcare: breast cancer (sigmoid)": ("examples.healthcare:breast_cancer", "auc", 0.1),
    "healthcare: diabetes (regression)": ("examples.healthcare:diabetes", "mae", 0.01),
    "finance: credit default, 3 % positive": ("examples.finance:credit_default", "auc", 0.1),
    "IoT: sensor events (1-D conv)": ("examples.iot:sensor_events", "accuracy", 0.1),
}


def digits(rounds: int, target: float) -> dict[str, Any]:
    split = data.builtin_split("digits", 0.2, 0)
    shards = data.partition(split.y_train, 8, "dirichlet", 0.1, 0)
    task = LearningTask(build_model=lambda: models.build("digits_mlp", 0))
    results = {}
    for name, overrides in DIGITS_VARIANTS.items():
        config = Config(workers=8, rounds=rounds, learning_rate=0.5, **overrides)
        result = run(task, config, lambda s, n, seed: (split.x_train[shards[s]],
                                                       split.y_train[shards[s]]),
                     held_out=(split.x_test, split.y_test))
        reached = rounds_to(result["curve"], target)
        result["rounds_to_target"] = reached
        result["seconds_to_target"] = None if reached is None else \
            result["curve"][reached - 1]["seconds"]
        results[name] = result
        print(name, result["final"], "rounds to target:", reached, flush=True)
    return {"target": target, "runs": results}


def examples(rounds: int, only: str = "") -> dict[str, Any]:
    """Each example whose name contains `only` (all by default)."""
    results = {}
    for name, (spec, metric, lr) in EXAMPLES.items():
        if only not in name:
            continue
        task = load(spec)
        config = Config(workers=4, rounds=rounds, learning_rate=lr, metric=metric)
        assert task.load_data is not None and task.load_eval_data is not None
        held = task.load_eval_data(0)
        federated = run(task, config, held_out=held)
        pooled = [task.load_data(s, 4, 0) for s in range(4)]
        x = np.concatenate([p[0] for p in pooled])
        y = np.concatenate([p[1] for p in pooled])
        alone = central(task, x, y, held, rounds * config.local_epochs, config.batch_size, lr,
                        metric)
        results[name] = {"task": spec, "metric": metric, "federated": federated["final"],
                         "central": {key: round(value, 4) for key, value in alone.items()},
                         "rounds": rounds}
        print(name, results[name], flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="learning-task benchmarks")
    parser.add_argument("which", choices=["digits", "examples"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--only", default="", help="examples: those whose name contains this")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = digits(args.rounds, args.target) if args.which == "digits" else \
        examples(args.rounds, args.only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
