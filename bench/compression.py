"""The cost of compressed updates: FedBuff on digits with none, float16, int8 and top-k (1 % and
10 %) side by side, in one run.

Every mode gets the same data (digits, Dirichlet(0.5) partition), seed, model, workers, buffer
size and wall-clock budget (the clock starts once all workers consume tasks); runs go one after
another on the real broker with real processes (fedmq.launcher.run_local). Reported per mode:
final held-out accuracy, time to --target, bytes the coordinator received per update (whole
bodies), how many times smaller than uncompressed, and the updates applied.

`python -m bench.compression --out DIR` runs it (`main`); so does `fedmq bench compression`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench import command
from bench.local_runs import config_json, run_each
from coordinator.results import plot_curves
from fedmq.options import setup_logging
from fedmq.settings import RunSettings

log = logging.getLogger("fedmq.bench")
MODES: dict[str, tuple[str, float]] = {"none": ("none", 0.01), "float16": ("float16", 0.01),
                                       "int8": ("int8", 0.01), "topk-10%": ("topk", 0.1),
                                       "topk-1%": ("topk", 0.01)}


@dataclass(frozen=True)
class BenchConfig:
    out: Path
    workers: int = 4
    seconds: float = 60.0
    target: float = 0.9
    buffer_size: int = 4
    seed: int = 0
    modes: str = ",".join(MODES)
    amqp_url: str = command.LOCAL_BROKER


def mode_settings(config: BenchConfig, mode: str) -> RunSettings:
    method, fraction = MODES[mode]
    return RunSettings(
        amqp_url=config.amqp_url, job=f"bench-compress-{uuid.uuid4().hex[:6]}",
        strategy="fedbuff", buffer_size=config.buffer_size, compression=method,
        topk_fraction=fraction, workers=config.workers, concurrency=config.workers,
        wait_for_workers=config.workers, dataset="digits", partition="dirichlet",
        dirichlet_alpha=0.5, seed=config.seed, target_accuracy=config.target,
        stop_at_target=False, max_seconds=config.seconds, max_updates=1_000_000, eval_every=1,
        out=config.out / mode, log_level="WARNING")


def run(config: BenchConfig) -> dict[str, Any]:
    """Every mode in turn; results.json and the accuracy plot in config.out."""
    config.out.mkdir(parents=True, exist_ok=True)
    results, curves = run_each(
        {mode: mode_settings(config, mode) for mode in config.modes.split(",")},
        ("final_accuracy", "time_to_target_s", "bytes_per_update", "updates_applied",
         "updates_rejected", "versions", "wall_seconds"))
    plain = results.get("none", {}).get("bytes_per_update")
    for row in results.values():
        row["smaller_by"] = plain / row["bytes_per_update"] if plain else None
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(sys.argv), "config": config_json(config),
              "results": results}
    (config.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_curves(config.out / "accuracy_vs_time.png", curves, config.target,
                title=f"digits, FedBuff K={config.buffer_size}, {config.workers} workers")
    return report


def describe(report: dict[str, Any]) -> str:
    lines = ["| mode | final accuracy | time to target | bytes per update | smaller by | "
             "updates applied |", "|---|---|---|---|---|---|"]
    for mode, row in report["results"].items():
        ttt, smaller = row["time_to_target_s"], row["smaller_by"]
        lines.append(f"| {mode} | {row['final_accuracy']:.4f} | "
                     f"{'never' if ttt is None else f'{ttt:.1f} s'} | "
                     f"{row['bytes_per_update']:,.0f} | "
                     f"{'-' if smaller is None else f'{smaller:.1f}x'} | "
                     f"{row['updates_applied']} |")
    return "\n".join(lines)


@click.command("compression",
               context_settings=command.CONTEXT)
@command.out_option
@click.option("--workers", default=4, show_default=True, help="Workers per mode.")
@click.option("--seconds", default=60.0, show_default=True,
              help="Wall-clock budget of each mode (from the moment all workers are ready).")
@click.option("--target", default=0.9, show_default=True, help="Target held-out accuracy.")
@click.option("--buffer-size", default=4, show_default=True, help="FedBuff K.")
@click.option("--seed", default=0, show_default=True, help="Data, partition and model seed.")
@click.option("--modes", default=",".join(MODES), show_default=True,
              help=f"Comma-separated modes among {', '.join(MODES)}.")
@command.amqp_url_option
def main(**options: Any) -> None:
    """FedBuff on digits: accuracy, time to target and bytes per update of each compression."""
    unknown = set(options["modes"].split(",")) - set(MODES)
    if unknown:
        raise click.BadParameter(f"unknown modes {sorted(unknown)}", param_hint="--modes")
    setup_logging("WARNING")
    report = run(BenchConfig(**options))
    click.echo(describe(report))
    command.echo_results(options['out'])


if __name__ == "__main__":
    main()
