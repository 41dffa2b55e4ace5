"""What checkpoints cost: one write, and a whole run with them on against off, side by side.

1. `save`: milliseconds per checkpoint of the digits model's coordinator (`core.state()`, the
   history's columns and `coordinator.checkpoint.save`, fsync and rename included) as the job
   grows (accepted ids, issued tasks, one history row per update), for FedAsync and for
   FedBuff holding 9 buffered deltas. No broker.
2. Runs: `fedmq run` (real broker, real processes) of the same job alternately with
   `--checkpoint` and `--no-checkpoint`, `--pairs` times; the ratio of updates per second is what
   checkpointing costs a whole run on this machine (the clock starts when all workers consume).

    python -m bench.checkpoint_cost --out /tmp/ckpt-bench [--pairs 2] [--updates 200]

`--pairs 0` measures the writes only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from common import models
from common.settings import TrainingSettings
from coordinator import checkpoint
from coordinator.core import CoordinatorCore
from coordinator.history import History
from coordinator.strategies import FedAsync, FedBuff, Strategy, staleness_constant
from fedmq.launcher import run_local
from fedmq.settings import RunSettings


def history_of(versions: int) -> History:
    """One row per version, every fifth evaluated, as a FedAsync job writes it."""
    history = History()
    for version in range(versions):
        history.add(version, version * 0.1, 3, "worker-0123", epsilon=None)
        if version % 5 == 0:
            history.score(version, version * 0.1, 0.95, 0.12)
    return history


def core_of(strategy: Strategy, ledger_size: int, weights: list[np.ndarray]) -> CoordinatorCore:
    core = CoordinatorCore(weights=weights, strategy=strategy, max_staleness=50,
                           training=TrainingSettings())
    core.accepted_ids = {uuid.uuid4().hex: i for i in range(ledger_size)}
    core.issued = {uuid.uuid4().hex for _ in range(ledger_size)}
    if isinstance(strategy, FedBuff):
        strategy.deltas = [[np.array(w) for w in weights] for _ in range(9)]
        strategy.weights = [1.0] * 9
    return core


def time_saves(repeats: int = 20) -> list[dict[str, Any]]:
    """What one commit's checkpoint costs the coordinator: the core's state and the history
    (one row per update), then the write."""
    weights = [np.array(w) for w in models.build("digits_mlp", 0).get_weights()]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / checkpoint.CHECKPOINT_NAME
        for name in ("fedasync", "fedbuff"):
            for ledger_size in (0, 1_000, 10_000, 100_000):
                strategy: Strategy = FedAsync(0.5, staleness_constant) if name == "fedasync" \
                    else FedBuff(buffer_size=10)
                core = core_of(strategy, ledger_size, weights)
                history = history_of(ledger_size)
                seconds, size = [], 0
                for _ in range(repeats):
                    started = time.perf_counter()
                    size = checkpoint.save(path, {"core": core.state(),
                                                  "history": history.columns()})
                    seconds.append(time.perf_counter() - started)
                rows.append({"strategy": name, "ledger": ledger_size, "bytes": size,
                             "median_ms": round(1000 * statistics.median(seconds), 2)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def time_runs(out: Path, pairs: int, updates: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for pair in range(pairs):
        for mode in ("on", "off") if pair % 2 == 0 else ("off", "on"):
            settings = RunSettings(workers=4, max_updates=updates, wait_for_workers=4,
                                   checkpoint=mode == "on", out=out / f"{mode}-{pair}",
                                   job=f"ckpt{uuid.uuid4().hex[:8]}")
            summary = run_local(settings)
            rate = summary["updates_applied"] / summary["wall_seconds"]
            rates[mode].append(rate)
            print(json.dumps({"pair": pair, "checkpoint": mode,
                              "updates_per_second": round(rate, 2)}), flush=True)
    on, off = statistics.mean(rates["on"]), statistics.mean(rates["off"])
    return {"updates_per_second_on": round(on, 2), "updates_per_second_off": round(off, 2),
            "on_over_off": round(on / off, 3), "pairs": pairs, "updates": updates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--updates", type=int, default=200)
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"saves": time_saves()}
    if options.pairs > 0:
        report["runs"] = time_runs(options.out, options.pairs, options.updates)
        print(json.dumps(report["runs"]))
    (options.out / "checkpoint_cost.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
