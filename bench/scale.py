"""`fedmq bench scale`: a real coordinator and simulated fleets, model size x fleet size.

For every cell: a real `fedmq coordinator` process on the real broker (its default strategy and
checkpointing unless told otherwise) and simulated workers in one process (bench/sim_fleet.py:
the real protocol, codec and model requests, no TensorFlow). Each cell stops after `--seconds`
of job clock (which starts once every simulated worker consumes tasks) or `--updates` applied
updates. Reported per cell: applied updates/s, MB/s of updates through the coordinator, the raw
broker rate of the same body size measured in the same run (bench/raw_rate.py) and the ratio,
the broker alone relaying the same traffic (an update in, a model out: `raw_rate.relay`) and
that ratio, bytes the broker sent the workers' connections per applied update (management API
`send_oct`), rejected share, coordinator peak RSS (the child's ru_maxrss) and publish-to-apply
latency (an update's confirmed publish to the `version` event of the version that applied it).

`fedmq bench scale --out DIR [--grid small|full]` (also `python -m bench.scale`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench import command, raw_rate, scale_model
from bench.scale_report import describe, plot, table
from common.errors import FedmqError
from common.job_removal import remove_job
from common.topology import Topology
from fedmq.management import Management

MiB = 1024 * 1024
GRIDS = {"small": [("20kb", 10)],
         "full": [(size, fleet) for size in ("20kb", "4mb", "40mb") for fleet in (10, 100, 1000)]}
STATS_INTERVAL = 5.0  # the management API's collect_statistics_interval
RELAY_WORKERS = 10    # the relay baseline's clients: as many updates in flight as 10 workers


@dataclass(frozen=True)
class Cell:
    size: str
    fleet: int
    out: Path
    seconds: float = 40.0
    updates: int = 10_000
    delay: float = 0.0
    strategy: str = ""          # empty: the coordinator's default
    concurrency: int = 0        # 0: one task per worker, at most ~400 MB of updates in flight
    max_staleness: int = -1     # -1: the coordinator's default
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    management_url: str = "http://guest:guest@127.0.0.1:15672"

    @property
    def tasks_in_flight(self) -> int:
        cap = max(2, 400_000_000 // scale_model.model_bytes(self.size))
        return self.concurrency or min(self.fleet, cap)


def drain_seconds(cell: Cell) -> float:
    """Long enough for the coordinator to decide every update still in flight when the clock
    runs out (a thousand of them take it over ten seconds); the drain ends early once quiet."""
    return max(5.0, 3 * cell.delay, cell.tasks_in_flight / 10)


def coordinator_command(cell: Cell, job: str, eval_data: Path) -> list[str]:
    command = [sys.executable, "-m", "fedmq", "coordinator", "--job", job,
               "--model", scale_model.spec(cell.size), "--eval-data-path", str(eval_data),
               "--out", str(cell.out), "--concurrency", str(cell.tasks_in_flight),
               "--max-updates", str(cell.updates), "--max-seconds", str(cell.seconds),
               "--wait-for-workers", str(cell.fleet), "--max-message-bytes", str(64 * MiB),
               "--drain-seconds", str(drain_seconds(cell)), "--num-shards", "1",
               "--amqp-url", cell.amqp_url, "--log-level", "WARNING",
               # the simulated updates are a held model plus a fixed perturbation, not training
               # deltas: the default norm bound (adapted to real deltas) is not what is measured
               "--max-update-norm-factor", "0"]
    if cell.strategy:
        command += ["--strategy", cell.strategy]
    if cell.max_staleness >= 0:
        command += ["--max-staleness", str(cell.max_staleness)]
    return command


def fleet_command(cell: Cell, job: str, report: Path) -> list[str]:
    per_connection = max(1, -(-cell.fleet // 100))  # at most 100 connections
    return [sys.executable, "-m", "bench.sim_fleet", "--job", job, "--workers", str(cell.fleet),
            "--per-connection", str(per_connection), "--size", cell.size,
            "--delay", str(cell.delay), "--report", str(report), "--amqp-url", cell.amqp_url]


def wait_rusage(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, int]:
    """(exit code, peak RSS in bytes) of a child; killed after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss * 1024
        time.sleep(0.2)
    proc.kill()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return -9, usage.ru_maxrss * 1024


def bytes_to_fleet(management: Management, job: str) -> int:
    return sum(int(c.get("send_oct") or 0) for c in management.connections()
               if str(c["client_properties"].get("connection_name", "")).startswith(
                   f"fedmq-sim-{job}-"))


def latencies(fleet_report: dict[str, Any], ledger: dict[str, Any]) -> list[float]:
    """Seconds from each applied update's confirmed publish to the announce of its version."""
    sent = dict(fleet_report["confirmed"])
    announced = {int(v): t for v, t in fleet_report["versions"].items()}
    out = []
    for update_id, accepted_at in ledger["applied"]:
        applied_in = next((v for v in range(accepted_at + 1, accepted_at + 64)
                           if v in announced), None)
        if update_id in sent and applied_in is not None:
            out.append(announced[applied_in] - sent[update_id])
    return out


def run_cell(cell: Cell) -> dict[str, Any]:
    """One cell end to end; returns its row (and leaves ledger.json, fleet.json in cell.out)."""
    cell.out.mkdir(parents=True, exist_ok=True)
    job = f"scale-{uuid.uuid4().hex[:8]}"
    eval_data = scale_model.held_out(cell.out / "held_out.npz")
    report = cell.out / "fleet.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent.parent),
                      os.environ.get("PYTHONPATH")]))}
    logs = (cell.out / "coordinator.log").open("wb"), (cell.out / "fleet.log").open("wb")
    fleet = subprocess.Popen(fleet_command(cell, job, report), env=env, stdout=logs[1],
                             stderr=subprocess.STDOUT)
    coordinator = subprocess.Popen(coordinator_command(cell, job, eval_data), env=env,
                                   stdout=logs[0], stderr=subprocess.STDOUT)
    management = Management(cell.management_url)
    try:
        code, peak_rss = wait_rusage(coordinator, cell.seconds + 240)
        ended = time.monotonic()
        while time.monotonic() - ended < STATS_INTERVAL + 1.5:
            time.sleep(0.2)  # the connection counters now hold all of the job's traffic
        sent_to_workers = bytes_to_fleet(management, job)
    finally:
        if coordinator.poll() is None:
            coordinator.kill()
            coordinator.wait()
        fleet.send_signal(signal.SIGTERM)
        try:
            fleet.wait(60)
        except subprocess.TimeoutExpired:
            fleet.kill()
            fleet.wait()
        for log in logs:
            log.close()
        with contextlib.suppress(FedmqError):  # never hide the run's own error
            remove_job(cell.amqp_url, Topology(job), name="fedmq-bench-cleanup")
    summary = json.loads((cell.out / "summary.json").read_text()) if code == 0 else {}
    ledger = json.loads((cell.out / "ledger.json").read_text()) if code == 0 else {}
    fleet_report = json.loads(report.read_text()) if report.exists() else {}
    return row(cell, code, peak_rss, sent_to_workers, summary, ledger, fleet_report)


def row(cell: Cell, code: int, peak_rss: int, sent_to_workers: int, summary: dict[str, Any],
        ledger: dict[str, Any], fleet_report: dict[str, Any]) -> dict[str, Any]:
    applied = int(summary.get("updates_applied", 0))
    rejected = int(summary.get("updates_rejected", 0))
    seconds = float(summary.get("wall_seconds", 0)) or 1.0
    lat = latencies(fleet_report, ledger) if ledger and fleet_report else []
    model = scale_model.model_bytes(cell.size)
    return {**{k: str(v) if isinstance(v, Path) else v for k, v in asdict(cell).items()},
            "concurrency_used": cell.tasks_in_flight, "exit_code": code,
            "model_bytes": model, "applied": applied, "rejected": rejected,
            "rejected_share": rejected / max(1, applied + rejected),
            "seconds": seconds, "updates_per_s": applied / seconds,
            "mb_per_s": summary.get("bytes_received", 0) / seconds / 1e6,
            "bytes_to_workers": sent_to_workers,
            "bytes_to_workers_per_update": sent_to_workers / max(1, applied),
            "model_sizes_per_update": sent_to_workers / max(1, applied) / model,
            "model_fetches": fleet_report.get("fetches"),
            "confirmed": len(fleet_report.get("confirmed", [])),
            "duplicates": summary.get("duplicates"),
            "mean_staleness": summary.get("mean_staleness"),
            "peak_rss_mb": peak_rss / 1e6,
            "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
            "latency_p99_s": float(np.percentile(lat, 99)) if lat else None}


def run(out: Path, grid: list[tuple[str, int]], **options: Any) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    amqp_url = options.get("amqp_url", Cell.amqp_url)
    raw: dict[str, Any] = {}
    relayed: dict[str, Any] = {}
    rows = []
    for size, fleet in grid:
        if size not in raw:  # the broker alone, same body size, same run
            body = scale_model.model_bytes(size) + 300
            raw[size] = raw_rate.measure(amqp_url, body, seconds=5.0)
            relayed[size] = raw_rate.relay(amqp_url, body, body, seconds=5.0,
                                           workers=RELAY_WORKERS)
        result = run_cell(Cell(size=size, fleet=fleet, out=out / f"{size}-{fleet}", **options))
        result["raw_mb_per_s"] = raw[size]["mb_per_s"]
        result["raw_messages_per_s"] = raw[size]["messages_per_s"]
        result["ratio"] = result["mb_per_s"] / max(raw[size]["mb_per_s"], 1e-9)
        result["relay_mb_per_s"] = relayed[size]["mb_per_s"]
        result["relay_ratio"] = result["mb_per_s"] / max(relayed[size]["mb_per_s"], 1e-9)
        rows.append(result)
        print(describe([result]), flush=True)
    report = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
              "raw": raw, "relay": relayed, "cells": rows}
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(out / "scale.png", rows)
    return report


@click.command("scale", context_settings=command.CONTEXT)
@command.out_option
@click.option("--grid", type=click.Choice(sorted(GRIDS)), default="full", show_default=True,
              help="small: one cell (20 KB, 10 workers); full: 20 KB/4 MB/40 MB x 10/100/1000.")
@click.option("--sizes", default="", help="Comma-separated model sizes instead of the grid's.")
@click.option("--fleets", default="", help="Comma-separated fleet sizes instead of the grid's.")
@click.option("--seconds", default=40.0, show_default=True, help="Job clock per cell.")
@click.option("--updates", default=10_000, show_default=True, help="Applied updates per cell.")
@click.option("--delay", default=0.0, show_default=True, help="Simulated training seconds.")
@click.option("--strategy", default="", help="Coordinator strategy; empty: its default.")
@click.option("--concurrency", default=0, show_default=True,
              help="Tasks in flight; 0: one per worker, at most ~400 MB of updates.")
@click.option("--max-staleness", default=-1, show_default=True, help="-1: the default.")
@click.option("--amqp-url", default=Cell.amqp_url, show_default=True,
              help="The broker; a cluster's nodes comma-separated (the first that answers).")
@click.option("--management-url", default=Cell.management_url, show_default=True,
              help="Management API of the broker (any node of a cluster).")
def main(out: Path, grid: str, sizes: str, fleets: str, **options: Any) -> None:
    """Throughput, traffic, memory and latency of a real coordinator with simulated fleets."""
    cells = GRIDS[grid]
    if sizes or fleets:
        cells = [(s, f) for s in (sizes.split(",") if sizes else sorted({c[0] for c in cells}))
                 for f in ([int(x) for x in fleets.split(",")] if fleets
                           else sorted({c[1] for c in cells}))]
    report = run(out, cells, **options)
    click.echo(table(report["cells"]))
    command.echo_results(out, "scale.png")


if __name__ == "__main__":
    main()
