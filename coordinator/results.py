"""The results directory: history.csv (one row per version), summary.json, ledger.json,
accuracy_vs_time.png."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from common.settings import CoordinatorSettings
from coordinator.core import CoordinatorCore
from coordinator.evaluation import Score
from coordinator.history import HISTORY_FIELDS, History
from coordinator.lifecycle import JobRecord

log = logging.getLogger("fedmq.coordinator")

def write_atomic(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_history(out: Path, history: History) -> None:
    tmp = out / "history.csv.tmp"
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(history.rows)
    os.replace(tmp, out / "history.csv")


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    write_atomic(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")


def write_ledger(out: Path, ledger: dict[str, Any]) -> None:
    """ledger.json: every accepted update id in order of acceptance with the global version it
    was accepted at, the rejected update ids with their codes, and the duplicate count: what an
    audit compares with the updates the workers sent."""
    write_atomic(out / "ledger.json", json.dumps(ledger, indent=1, sort_keys=True) + "\n")


def read_curve(path: Path) -> list[tuple[float, float]]:
    """(wall seconds, accuracy) of every evaluated version in a history.csv."""
    with path.open() as handle:
        return [(float(r["wall_seconds"]), float(r["accuracy"]))
                for r in csv.DictReader(handle) if r["accuracy"] != ""]


def plot_curves(path: Path, curves: dict[str, list[tuple[float, float]]],
                target: float | None = None, title: str = "fedmq") -> None:
    """accuracy_vs_time.png: one line per named curve of (seconds, accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in curves.items():
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=name, marker=".", markersize=3)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("wall-clock seconds")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(settings: CoordinatorSettings, core: CoordinatorCore, history: History,
              score: Score | None, record: JobRecord, run: dict[str, Any]) -> dict[str, Any]:
    """Write history.csv, the plot, summary.json and ledger.json of a finished (or stopped)
    job; `run` holds the summary fields only the session knows. Returns the summary."""
    out: Path = settings.out
    write_history(out, history)
    curves = {settings.strategy: history.curve(),
              "federated (mean)": history.curve("fed_metric"),
              "federated (worst worker)": history.curve("worst_metric")}
    plot_curves(out / "accuracy_vs_time.png", curves, settings.target_accuracy,
                title=f"fedmq {settings.task or settings.dataset}")
    staleness = core.staleness_seen
    summary = {
        "final_accuracy": None if score is None else score.accuracy,
        "final_loss": None if score is None else score.loss,
        "final_metrics": None if score is None else score.metrics,
        "updates_applied": core.applied, "updates_rejected": core.rejected_total,
        "rejected_by_reason": dict(core.rejected), "duplicates": core.duplicates,
        "versions": core.version, "strategy": settings.strategy,
        "workers": len(core.workers), "worker_ids": sorted(core.workers),
        "dataset": settings.eval_data_path or settings.task or settings.dataset,
        "mean_staleness": float(np.mean(staleness)) if staleness else 0.0,
        "max_staleness_seen": max(staleness, default=0),
        "withheld_buffers": core.withheld_buffers, "expired_tasks": core.expired,
        "reissued_tasks": core.reissued,
        "checkpoint": settings.checkpoint, "wall_seconds": round(record.elapsed(), 3),
        "time_to_target_s": record.time_to_target, "bytes_received": record.bytes_received,
        "bytes_per_update": record.bytes_received / max(1, len(core.accepted_ids)
                                                        + core.rejected_total + core.duplicates),
        "compression": settings.compression, "topk_fraction": core.compression.topk_fraction,
        "resumes": record.resumes, "resumed_from_version": record.resumed_from,
        "update_norm": None if core.norm_guard is None else {
            "bound": core.norm_guard.bound, "recent": core.norm_guard.history[-10:],
            "max_accepted_to_bound": core.norm_guard.max_ratio}, **run,
    }
    write_summary(out, summary)
    write_ledger(out, {"applied": [[update_id, version] for update_id, version
                                   in core.accepted_ids.items()],
                       "rejected": core.rejected_ids, "duplicates": core.duplicates})
    log.info("finished: %s", {k: summary[k] for k in ("final_accuracy", "updates_applied",
                                                       "updates_rejected", "wall_seconds")})
    return summary
