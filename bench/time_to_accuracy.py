"""Time to accuracy of fedavg, fedasync and fedbuff side by side, plus central training.

Every strategy gets the same data (digits), Dirichlet(0.5) partition, seed, model, workers (by
default 8, the last 2 of them 4x slower) and the same wall-clock budget; the clock starts when all
workers consume tasks (--wait-for-workers), so process start-up is not counted. Runs go one after
another on the real broker with real processes. The central reference trains the same model on
the pooled training split through the worker's trainer (worker.trainer.Trainer), epoch by epoch.

`python -m bench.time_to_accuracy --out DIR` runs it (`main`); so does
`fedmq bench time-to-accuracy --out DIR`, which is this same command.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench import command
from bench.local_runs import config_json, run_each
from common import data, models
from coordinator.evaluation import Evaluator
from coordinator.results import plot_curves
from fedmq.options import setup_logging
from fedmq.settings import RunSettings
from worker.trainer import Trainer

log = logging.getLogger("fedmq.bench")
STRATEGIES = ("fedavg", "fedasync", "fedbuff")


@dataclass(frozen=True)
class BenchConfig:
    out: Path
    workers: int = 8
    slow_workers: int = 2
    slowdown: float = 4.0
    target: float = 0.95
    seconds: float = 60.0
    seed: int = 0
    amqp_url: str = command.LOCAL_BROKER
    buffer_size: int = 4
    alpha: float = 0.5


def strategy_settings(config: BenchConfig, strategy: str) -> RunSettings:
    return RunSettings(
        amqp_url=config.amqp_url, job=f"bench-{strategy}-{uuid.uuid4().hex[:6]}",
        strategy=strategy, workers=config.workers, slow_workers=config.slow_workers,
        slowdown=config.slowdown, concurrency=config.workers, wait_for_workers=config.workers,
        dataset="digits", partition="dirichlet", dirichlet_alpha=0.5, seed=config.seed,
        target_accuracy=config.target, stop_at_target=False, max_seconds=config.seconds,
        max_updates=1_000_000, eval_every=1, buffer_size=config.buffer_size,
        alpha=config.alpha, out=config.out / strategy, log_level="WARNING")


def time_to_target(curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, accuracy in curve if accuracy >= target), None)


def train_central(config: BenchConfig) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    """The same model, optimiser and batch size on the pooled training split, epoch by epoch,
    trained by the worker's trainer (as if one worker held all the data)."""
    split = data.builtin_split("digits", 0.2, config.seed)
    name = models.resolve_name("", "digits")
    trainer = Trainer(models.build(name, config.seed), split.x_train, split.y_train)
    evaluator = Evaluator(models.build(name, config.seed), split.x_test, split.y_test)
    defaults = RunSettings()
    weights = trainer.model.get_weights()
    curve: list[tuple[float, float]] = [(0.0, 0.0)]
    started = time.monotonic()
    while time.monotonic() - started < config.seconds and len(curve) <= 60:
        weights = trainer.train(weights, 1, defaults.batch_size, defaults.learning_rate).weights
        curve.append((time.monotonic() - started, evaluator.accuracy_of(weights)))
    result = {"time_to_target_s": time_to_target(curve, config.target),
              "final_accuracy": curve[-1][1], "updates_applied": None,
              "bytes_received": 0, "epochs": len(curve) - 1}
    return result, curve


def run(config: BenchConfig) -> dict[str, Any]:
    """Run every strategy and the central reference; write results.json and the plot."""
    config.out.mkdir(parents=True, exist_ok=True)
    results, curves = run_each(
        {strategy: strategy_settings(config, strategy) for strategy in STRATEGIES},
        ("time_to_target_s", "final_accuracy", "updates_applied", "bytes_received",
         "versions", "mean_staleness", "wall_seconds"))
    results["central"], curves["central"] = train_central(config)
    async_times = {s: results[s]["time_to_target_s"] for s in ("fedasync", "fedbuff")
                   if results[s]["time_to_target_s"] is not None}
    best = min(async_times, key=lambda s: async_times[s]) if async_times else None
    baseline = results["fedavg"]["time_to_target_s"]
    speedup = baseline / async_times[best] if best and baseline else None
    report = {"config": config_json(config),
              "results": results, "best_async": best, "speedup_over_fedavg": speedup}
    (config.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_curves(config.out / "accuracy_vs_time.png", curves, config.target,
                title=f"digits, {config.workers} workers ({config.slow_workers} "
                      f"{config.slowdown:g}x slower)")
    return report


def describe(report: dict[str, Any]) -> str:
    lines = [f"{'':10}{'time to target':>16}{'final acc':>11}{'updates':>9}{'MB in':>8}"]
    for name, row in report["results"].items():
        ttt = row["time_to_target_s"]
        lines.append(f"{name:10}{'never' if ttt is None else f'{ttt:.1f} s':>16}"
                     f"{row['final_accuracy']:>11.4f}{row['updates_applied'] or '-':>9}"
                     f"{row['bytes_received'] / 1e6:>8.1f}")
    speedup = report["speedup_over_fedavg"]
    lines.append(f"best async strategy: {report['best_async']}; speedup over fedavg: "
                 + ("n/a (a strategy never reached the target)" if speedup is None
                    else f"{speedup:.2f}x"))
    return "\n".join(lines)


@click.command("time-to-accuracy",
               context_settings=command.CONTEXT)
@command.out_option
@click.option("--workers", default=8, show_default=True, help="Workers per strategy.")
@click.option("--slow-workers", default=2, show_default=True, help="How many are stragglers.")
@click.option("--slowdown", default=4.0, show_default=True, help="Straggler slowdown factor.")
@click.option("--target", default=0.95, show_default=True, help="Target held-out accuracy.")
@click.option("--seconds", default=60.0, show_default=True,
              help="Wall-clock budget of each strategy (from the moment all workers are ready).")
@click.option("--seed", default=0, show_default=True, help="Data, partition and model seed.")
@click.option("--buffer-size", default=4, show_default=True, help="FedBuff K.")
@click.option("--alpha", default=0.5, show_default=True, help="FedAsync mixing weight.")
@command.amqp_url_option
def main(**options: Any) -> None:
    """fedavg vs fedasync vs fedbuff vs central training: time to --target on digits."""
    setup_logging("WARNING")
    report = run(BenchConfig(**options))
    click.echo(describe(report))
    command.echo_results(options['out'])


if __name__ == "__main__":
    main()
