"""The results directory: history.csv (one row per version), summary.json, ledger.json,
accuracy_vs_time.png."""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.settings import CoordinatorSettings
from coordinator.checkpoint import pack_strings, unpack_strings
from coordinator.core import CoordinatorCore
from coordinator.evaluation import Score
from coordinator.lifecycle import JobRecord

log = logging.getLogger("fedmq.coordinator")

HISTORY_FIELDS = ["version", "wall_seconds", "accuracy", "loss", "staleness", "worker_id",
                  "epsilon"]


@dataclass
class History:
    """Rows of history.csv; accuracy and loss are filled on versions that were evaluated."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, version: int, wall_seconds: float, staleness: int | None,
            worker_id: str = "", epsilon: float | None = None) -> None:
        """A new version; `epsilon` is the largest privacy loss of any worker so far (DP on)."""
        self.rows.append({"version": version, "wall_seconds": round(wall_seconds, 4),
                          "accuracy": "", "loss": "", "staleness": staleness,
                          "worker_id": worker_id, "epsilon": "" if epsilon is None else epsilon})

    def score(self, version: int, wall_seconds: float, accuracy: float, loss: float) -> None:
        """Attach an evaluation to its version's row (adding one for version 0 or a re-score)."""
        row = next((r for r in reversed(self.rows) if r["version"] == version), None)
        if row is None:
            self.rows.append({"version": version, "wall_seconds": round(wall_seconds, 4),
                              "accuracy": "", "loss": "", "staleness": "", "worker_id": "",
                              "epsilon": ""})
            row = self.rows[-1]
        row["accuracy"], row["loss"] = round(accuracy, 6), round(loss, 6)

    def columns(self) -> dict[str, Any]:
        """The rows as arrays, for the checkpoint (written at every commit: as JSON, 100,000
        rows cost the coordinator half a second each time; as arrays, a seventh of that).
        Blank cells become NaN (or -1 for staleness) and come back blank."""
        rows, n = self.rows, len(self.rows)

        def numbers(name: str, dtype: Any, blank: float) -> np.ndarray:
            return np.fromiter((blank if r[name] in ("", None) else r[name] for r in rows),
                               dtype, n)

        return {"version": numbers("version", np.int64, -1),
                "wall_seconds": numbers("wall_seconds", np.float64, np.nan),
                "accuracy": numbers("accuracy", np.float64, np.nan),
                "loss": numbers("loss", np.float64, np.nan),
                "staleness": numbers("staleness", np.int64, -1),
                "epsilon": numbers("epsilon", np.float64, np.nan),
                "worker_id": pack_strings([r["worker_id"] for r in rows])}

    @classmethod
    def from_columns(cls, columns: dict[str, Any]) -> History:
        """Inverse of `columns`."""
        def cells(name: str) -> list[Any]:
            blank = (lambda x: x < 0) if name == "staleness" else (lambda x: x != x)  # NaN
            return ["" if blank(x) else x for x in np.asarray(columns[name]).tolist()]

        names = ["version", "wall_seconds", "accuracy", "loss", "staleness", "epsilon"]
        table = {name: cells(name) for name in names}
        table["worker_id"] = unpack_strings(columns["worker_id"])
        return cls([dict(zip(HISTORY_FIELDS, values, strict=True))
                    for values in zip(*(table[f] for f in HISTORY_FIELDS), strict=True)])

    def curve(self) -> list[tuple[float, float]]:
        """(wall seconds, accuracy) of every evaluated version."""
        return [(float(r["wall_seconds"]), float(r["accuracy"]))
                for r in self.rows if r["accuracy"] != ""]


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
              score: Score, record: JobRecord, run: dict[str, Any]) -> dict[str, Any]:
    """Write history.csv, the plot, summary.json and ledger.json of a finished (or stopped)
    job; `run` holds the summary fields only the session knows. Returns the summary."""
    out: Path = settings.out
    write_history(out, history)
    plot_curves(out / "accuracy_vs_time.png", {settings.strategy: history.curve()},
                settings.target_accuracy, title=f"fedmq {settings.dataset}")
    staleness = core.staleness_seen
    summary = {
        "final_accuracy": score.accuracy, "final_loss": score.loss,
        "updates_applied": core.applied, "updates_rejected": core.rejected_total,
        "rejected_by_reason": dict(core.rejected), "duplicates": core.duplicates,
        "versions": core.version, "strategy": settings.strategy,
        "workers": len(core.workers), "worker_ids": sorted(core.workers),
        "dataset": settings.eval_data_path or settings.dataset,
        "mean_staleness": float(np.mean(staleness)) if staleness else 0.0,
        "max_staleness_seen": max(staleness, default=0),
        "withheld_buffers": core.withheld_buffers, "expired_tasks": core.expired,
        "checkpoint": settings.checkpoint, "wall_seconds": round(record.elapsed(), 3),
        "time_to_target_s": record.time_to_target, "bytes_received": record.bytes_received,
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
