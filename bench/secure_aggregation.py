"""Secure aggregation against plain sealed FedBuff: accuracy and bytes per update, one run each.

Both runs are sealed (identities, registry) FedBuff jobs on digits with the same workers (by
default 8, the last 2 of them 4x slower), K, seed and clip: the plain run clips every buffered
delta to C (--norm-bound C), the secure run has every worker clip to C before quantising and
masking (--secure-aggregation --secure-clip C) and adds `fedmq helper`. The per-update norm
bound is off in both (it cannot run on masked shares). Runs go one after another on the real
broker with real processes; the coordinator's summary gives the final held-out accuracy and the
bytes it received.

`python -m bench.secure_aggregation --out DIR` runs it and writes DIR/results.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from bench import command
from common import identity
from common.errors import FedmqError
from common.job_removal import remove_job
from common.topology import Topology

MODES = ("plain", "secure")


def make_keys(keys: Path, workers: int) -> None:
    """The coordinator's, the helper's and every worker's identity; the workers registered."""
    registry = identity.Registry()
    for name in ["coordinator", "helper", *(f"w{i}" for i in range(workers))]:
        made = identity.Identity.generate(name)
        identity.save_identity(made, keys)
        if name.startswith("w"):
            registry.add(made.public())
    registry.save(keys / "registry.json")


def start(role: str, log: Path, settings: dict[str, Any]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMQ_")}
    env |= {f"FEDMQ_{k.upper()}": str(v) for k, v in settings.items()}
    with log.open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "fedmq", role], env=env, stdout=output,
                                stderr=subprocess.STDOUT)


def run_one(mode: str, options: dict[str, Any], keys: Path, out: Path) -> dict[str, Any]:
    """One job to its end; its summary's figures."""
    job = f"bench-secagg-{mode}-{uuid.uuid4().hex[:6]}"
    common = {"amqp_url": options["amqp_url"], "job": job, "seed": options["seed"],
              "num_shards": options["workers"], "log_level": "INFO"}
    secure = mode == "secure"
    procs = []
    try:
        if secure:
            procs.append(start("helper", out / "helper.log", {
                **common, "identity": keys / "helper.key", "registry": keys / "registry.json",
                "coordinator_key": keys / "coordinator.pub", "state_dir": out / "helper"}))
        for i in range(options["workers"]):
            slow = i >= options["workers"] - options["slow_workers"]
            procs.append(start("worker", out / f"w{i}.log", {
                **common, "identity": keys / f"w{i}.key", "shard_index": i,
                "coordinator_key": keys / "coordinator.pub",
                "slowdown": options["slowdown"] if slow else 1.0,
                **({"helper_key": keys / "helper.pub"} if secure else {})}))
        coordinator = start("coordinator", out / "coordinator.log", {
            **common, "strategy": "fedbuff", "buffer_size": options["buffer_size"],
            "max_updates": options["max_updates"], "concurrency": options["workers"],
            "wait_for_workers": options["workers"], "out": out / "results",
            "identity": keys / "coordinator.key", "registry": keys / "registry.json",
            "max_update_norm_factor": 0, "drain_seconds": 5,
            **({"secure_aggregation": True, "secure_clip": options["clip"],
                "helper_key": keys / "helper.pub"} if secure
               else {"norm_bound": options["clip"]})})
        started = time.monotonic()
        if coordinator.wait(options["timeout"]) != 0:
            raise click.ClickException(f"the {mode} coordinator failed: see {out}")
        seconds = time.monotonic() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        with contextlib.suppress(FedmqError):  # never hide the run's own error
            remove_job(options["amqp_url"], Topology(job, secure=True),
                       name="fedmq-bench-cleanup")
    summary = json.loads((out / "results" / "summary.json").read_text())
    return {"final_accuracy": summary["final_accuracy"],
            "updates_applied": summary["updates_applied"],
            "bytes_per_update": summary["bytes_received"] / max(1, summary["updates_applied"]),
            "versions": summary["versions"], "job_seconds": round(seconds, 1)}


@click.command("secure-aggregation",
               context_settings=command.CONTEXT)
@command.out_option
@click.option("--workers", default=8, show_default=True, help="Workers per run.")
@click.option("--slow-workers", default=2, show_default=True, help="How many are stragglers.")
@click.option("--slowdown", default=4.0, show_default=True, help="Straggler slowdown factor.")
@click.option("--buffer-size", default=4, show_default=True, help="FedBuff K.")
@click.option("--max-updates", default=96, show_default=True, help="Updates per run.")
@click.option("--clip", default=5.0, show_default=True, help="L2 clip C of both runs.")
@click.option("--seed", default=0, show_default=True, help="Data, partition and model seed.")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds a run may take.")
@command.amqp_url_option
def main(**options: Any) -> None:
    """Plain sealed FedBuff vs FedBuff with secure aggregation: accuracy and bytes per update."""
    out: Path = options["out"]
    make_keys(out / "keys", options["workers"])
    report: dict[str, Any] = {"options": {k: str(v) for k, v in options.items()}, "results": {}}
    for mode in MODES:
        (out / mode).mkdir(parents=True, exist_ok=True)
        report["results"][mode] = run_one(mode, options, out / "keys", out / mode)
    plain, secure = report["results"]["plain"], report["results"]["secure"]
    report["accuracy_difference_points"] = 100 * (secure["final_accuracy"] -
                                                  plain["final_accuracy"])
    report["bytes_ratio"] = secure["bytes_per_update"] / plain["bytes_per_update"]
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    click.echo("| run | final accuracy | bytes per update | versions | job seconds |")
    click.echo("| --- | --- | --- | --- | --- |")
    for mode in MODES:
        row = report["results"][mode]
        click.echo(f"| {mode} | {row['final_accuracy']:.4f} | {row['bytes_per_update']:.0f} | "
                   f"{row['versions']} | {row['job_seconds']} |")
    click.echo(f"secure - plain: {report['accuracy_difference_points']:+.2f} points, bytes x "
               f"{report['bytes_ratio']:.3f}")


if __name__ == "__main__":
    main()
