"""Byzantine attack experiment: 10 buffered updates per step, 2 of them from attackers.

Real Keras training (worker.trainer.Trainer) of every honest update, on 10 shards of digits; the
aggregation is the coordinator's own pure functions (coordinator.strategies.robust), applied as the
buffered strategy applies them (x <- x + aggregate). No broker: each step every worker trains
from the current global model, so the buffer holds 10 updates of staleness 0. Attackers train
honestly and then send -10x (sign flip) and 100x (scale) their delta (worker.attacks).

    python -m bench.robust_attack --rounds 20 --out docs/results/robust_attack.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.lab import Lab, Setup
from common.arrays import global_norm
from coordinator.strategies.robust import RobustConfig, krum_scores
from worker.attacks import attack_delta

ATTACKERS = {8: ("sign_flip", 10.0), 9: ("scale", 100.0)}
STRATEGIES: dict[str, tuple[RobustConfig, bool]] = {  # name -> (rule, with attackers)
    "clean mean": (RobustConfig("mean"), False),
    "attacked mean": (RobustConfig("mean"), True),
    "norm bound": (RobustConfig("mean", norm_bound=1.0), True),
    "median": (RobustConfig("median"), True),
    "trimmed mean": (RobustConfig("trimmed_mean", byzantine_f=2), True),
    "krum": (RobustConfig("krum", byzantine_f=2), True),
    "multi-krum": (RobustConfig("multi_krum", byzantine_f=2), True),
}


def run(setup: Setup, names: Sequence[str] = tuple(STRATEGIES)) -> dict[str, dict[str, float]]:
    """Final held-out accuracy (and seconds) of each strategy after `setup.rounds` steps."""
    lab = Lab(setup)
    rng = np.random.default_rng(setup.seed)
    results: dict[str, dict[str, float]] = {}
    for name in names:
        rule, attacked = STRATEGIES[name]
        rule.check(setup.workers)
        weights, started = [w.copy() for w in lab.initial], time.monotonic()
        picks: list[int] = []  # which worker Krum chose, step by step
        pick_norm_ratio = float("nan")  # last step: chosen delta's norm / median honest norm
        for _ in range(setup.rounds):
            deltas = lab.deltas(weights)
            for index, (attack, factor) in ATTACKERS.items():
                if attacked:
                    deltas[index] = attack_delta(deltas[index], attack, factor, rng)
            if rule.aggregator == "krum":
                picks.append(int(np.argmin(krum_scores(deltas, rule.byzantine_f))))
                honest = [global_norm(d) for i, d in enumerate(deltas)
                          if not (attacked and i in ATTACKERS)]
                pick_norm_ratio = global_norm(deltas[picks[-1]]) / float(np.median(honest))
            weights = lab.step(weights, rule.aggregate(deltas))
        results[name] = {"accuracy": lab.accuracy(weights),
                         "seconds": round(time.monotonic() - started, 1)}
        if picks:
            results[name] |= {"distinct_workers_picked": len(set(picks)),
                              "top_worker_share": max(map(picks.count, set(picks))) / len(picks),
                              "last_pick_norm_ratio": round(pick_norm_ratio, 3)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=Setup.rounds)
    parser.add_argument("--local-epochs", type=int, default=Setup.local_epochs)
    parser.add_argument("--learning-rate", type=float, default=Setup.learning_rate,
                        help="Workers' local SGD learning rate.")
    parser.add_argument("--server-lr", type=float, default=Setup.server_lr,
                        help="Step size on the aggregate (the same for every strategy).")
    parser.add_argument("--partition", choices=["iid", "dirichlet"], default="iid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategies", nargs="+", choices=list(STRATEGIES),
                        default=list(STRATEGIES), help="Which to run (clean mean first).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    setup = Setup(rounds=args.rounds, local_epochs=args.local_epochs,
                  learning_rate=args.learning_rate, server_lr=args.server_lr,
                  partition=args.partition, seed=args.seed)
    results = run(setup, args.strategies)
    clean = results.get("clean mean", {"accuracy": float("nan")})["accuracy"]
    print(f"{'strategy':<15} {'accuracy':>9} {'vs clean':>9} {'seconds':>8}")
    for name, row in results.items():
        print(f"{name:<15} {row['accuracy']:>9.4f} {100 * (row['accuracy'] - clean):>+8.1f}p "
              f"{row['seconds']:>8.1f}"
              + (f"  (Krum picked {row['distinct_workers_picked']:.0f} distinct workers, the "
                 f"top one {100 * row['top_worker_share']:.0f}% of steps; last pick's norm "
                 f"{row['last_pick_norm_ratio']:.2f}x the median honest delta's)"
                 if "distinct_workers_picked" in row else ""))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"setup": setup.__dict__, "results": results},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
