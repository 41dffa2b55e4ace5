"""A 1 GB model end to end on a broker with a 16 MiB message limit (issue 15's acceptance).

A private RabbitMQ node (its own port, `max_message_size` 16 MiB, deleted afterwards), a real
`fedmq coordinator` with a generated model of 250.2M float32 parameters (bench/scale_model.py,
"1gb": 17 Dense layers, the largest 67 MB) and random held-out data, and simulated workers that
speak the real protocol (bench/sim_fleet.py: they fetch the model in chunks and answer each task
with a delta or the model plus a small perturbation, sent in chunks). Everything travels in
chunks of `--chunk-bytes` (4 MiB by default; a whole body may be up to --max-body-bytes, 2 GiB).

Measured: the coordinator's wall time and peak RSS (ru_maxrss of the child), against the model's
size; audited from ledger.json, summary.json and the fleet's report: every update the fleet
published was applied exactly once, none rejected.

`python -m bench.big_model --out DIR` (also `fedmq bench big-model`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from bench import command, scale_model
from bench.scale import wait_rusage
from fedmq.local_broker import LocalNode

MiB = 1024 * 1024


def coordinator_command(url: str, job: str, out: Path, eval_data: Path,
                        options: dict[str, Any]) -> list[str]:
    command = [sys.executable, "-m", "fedmq", "coordinator", "--job", job,
               "--model", scale_model.spec(options["size"]), "--eval-data-path", str(eval_data),
               "--out", str(out), "--max-updates", str(options["updates"]),
               "--concurrency", str(options["workers"]),
               "--wait-for-workers", str(options["workers"]), "--num-shards", "1",
               "--max-message-bytes", str(16 * MiB), "--chunk-bytes", str(options["chunk_bytes"]),
               "--strategy", options["strategy"], "--amqp-url", url, "--log-level", "INFO",
               "--drain-seconds", "120", "--task-deadline", "1800",
               # simulated updates are a perturbation, not training deltas (as bench/scale.py)
               "--max-update-norm-factor", "0"]
    if not options["checkpoint"]:
        command.append("--no-checkpoint")
    return command


def fleet_command(url: str, job: str, report: Path, options: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "bench.sim_fleet", "--job", job,
            "--workers", str(options["workers"]), "--size", options["size"],
            "--chunk-bytes", str(options["chunk_bytes"]), "--report", str(report),
            "--amqp-url", url]


def audit(summary: dict[str, Any], ledger: dict[str, Any], fleet: dict[str, Any],
          updates: int) -> dict[str, Any]:
    """Every update published was applied once: the ledger's applied ids are unique, are the
    fleet's confirmed ids, and number `updates`; nothing was rejected or applied twice."""
    applied = [update_id for update_id, _ in ledger.get("applied", [])]
    confirmed = [update_id for update_id, _ in fleet.get("confirmed", [])]
    checks = {
        "applied_count": len(applied) == updates == summary.get("updates_applied"),
        "applied_unique": len(set(applied)) == len(applied),
        "applied_were_published": set(applied) <= set(confirmed),
        "published_were_applied": set(confirmed) <= set(applied),
        "none_rejected": not ledger.get("rejected") and summary.get("updates_rejected") == 0,
    }
    return {"ok": all(checks.values()), **checks, "applied": len(applied),
            "published": len(confirmed), "duplicates": ledger.get("duplicates")}


def run(out: Path, **options: Any) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    node = LocalNode(options["port"], config=f"max_message_size = {16 * MiB}")
    node.start("guest", "guest", "/")
    url = f"amqp://guest:guest@127.0.0.1:{options['port']}/%2F"
    job, report = f"big-{uuid.uuid4().hex[:6]}", out / "fleet.json"
    eval_data = scale_model.held_out(out / "held_out.npz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(__file__).resolve().parent.parent),
                      os.environ.get("PYTHONPATH")]))}
    logs = (out / "coordinator.log").open("wb"), (out / "fleet.log").open("wb")
    started = time.monotonic()
    try:
        fleet = subprocess.Popen(fleet_command(url, job, report, options), env=env,
                                 stdout=logs[1], stderr=subprocess.STDOUT)
        coordinator = subprocess.Popen(
            coordinator_command(url, job, out / "coordinator", eval_data, options), env=env,
            stdout=logs[0], stderr=subprocess.STDOUT)
        code, peak_rss = wait_rusage(coordinator, options["timeout"])
        wall = time.monotonic() - started
        fleet.send_signal(signal.SIGTERM)
        fleet_code, fleet_rss = wait_rusage(fleet, 120)
    finally:
        for log in logs:
            log.close()
        node.stop()
    summary = _read(out / "coordinator" / "summary.json")
    model_bytes = scale_model.model_bytes(options["size"])
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(sys.argv), "options": options,
        "model_bytes": model_bytes, "parameters": model_bytes // 4,
        "coordinator_exit": code, "fleet_exit": fleet_code,
        "wall_seconds": round(wall, 1), "job_seconds": summary.get("wall_seconds"),
        "coordinator_peak_rss_bytes": peak_rss,
        "rss_over_model": peak_rss / model_bytes,
        "fleet_peak_rss_bytes": fleet_rss,
        "audit": audit(summary, _read(out / "coordinator" / "ledger.json"), _read(report),
                       options["updates"]),
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _read(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


@click.command("big-model", context_settings=command.CONTEXT)
@command.out_option
@click.option("--size", default="1gb", show_default=True,
              type=click.Choice(sorted(scale_model.HIDDEN)), help="Model (bench/scale_model.py).")
@click.option("--workers", default=2, show_default=True, help="Simulated workers.")
@click.option("--updates", default=4, show_default=True, help="Updates to apply.")
@click.option("--strategy", default="fedasync", show_default=True,
              type=click.Choice(["fedasync", "fedbuff"]))
@click.option("--chunk-bytes", default=4 * MiB, show_default=True)
@click.option("--checkpoint/--no-checkpoint", default=True, show_default=True)
@click.option("--port", default=5710, show_default=True, help="The private node's AMQP port.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds before giving up.")
def main(out: Path, **options: Any) -> None:
    """A 1 GB model, 16 MiB message limit: wall time, coordinator peak RSS, exactly-once audit."""
    result = run(out, **options)
    click.echo(json.dumps({k: v for k, v in result.items() if k != "options"}, indent=2))
    if result["coordinator_exit"] != 0 or not result["audit"]["ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
