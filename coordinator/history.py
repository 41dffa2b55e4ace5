"""The job's history: one row per global version (wall time, accuracy and loss where evaluated,
staleness, worker, epsilon); history.csv and the checkpoint hold it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.checkpoint import pack_strings, unpack_strings

HISTORY_FIELDS = ["version", "wall_seconds", "accuracy", "loss", "staleness", "worker_id",
                  "epsilon", "fed_metric", "fed_loss", "worst_metric", "worst_worker",
                  "eval_workers"]
FEDERATED = {"fed_metric": "", "fed_loss": "", "worst_metric": "", "worst_worker": "",
             "eval_workers": ""}  # blank until the workers' reports of the version arrive
FLOATS = ("fed_metric", "fed_loss", "worst_metric")


@dataclass
class History:
    """Rows of history.csv; accuracy and loss are filled on versions that were evaluated."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, version: int, wall_seconds: float, staleness: int | None,
            worker_id: str = "", epsilon: float | None = None) -> None:
        """A new version; `epsilon` is the largest privacy loss of any worker so far (DP on)."""
        self.rows.append({"version": version, "wall_seconds": round(wall_seconds, 4),
                          "accuracy": "", "loss": "", "staleness": staleness,
                          "worker_id": worker_id, "epsilon": "" if epsilon is None else epsilon,
                          **FEDERATED})

    def _row(self, version: int, wall_seconds: float) -> dict[str, Any]:
        row = next((r for r in reversed(self.rows) if r["version"] == version), None)
        if row is None:
            self.rows.append({"version": version, "wall_seconds": round(wall_seconds, 4),
                              "accuracy": "", "loss": "", "staleness": "", "worker_id": "",
                              "epsilon": "", **FEDERATED})
            row = self.rows[-1]
        return row

    def score(self, version: int, wall_seconds: float, accuracy: float | None,
              loss: float) -> None:
        """Attach an evaluation to its version's row (adding one for version 0 or a re-score)."""
        row = self._row(version, wall_seconds)
        row["accuracy"] = "" if accuracy is None else round(accuracy, 6)
        row["loss"] = round(loss, 6)

    def federated(self, version: int, wall_seconds: float, metric: float, loss: float,
                  worst: float, worst_worker: str, workers: int) -> None:
        """The workers' evaluation of a version so far: mean metric and loss, worst worker."""
        row = self._row(version, wall_seconds)
        row.update(fed_metric=round(metric, 6), fed_loss=round(loss, 6),
                   worst_metric=round(worst, 6), worst_worker=worst_worker,
                   eval_workers=workers)

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
                "worker_id": pack_strings([r["worker_id"] for r in rows]),
                **{name: numbers(name, np.float64, np.nan) for name in FLOATS},
                "eval_workers": numbers("eval_workers", np.int64, -1),
                "worst_worker": pack_strings([r["worst_worker"] for r in rows])}

    @classmethod
    def from_columns(cls, columns: dict[str, Any]) -> History:
        """Inverse of `columns`."""
        def cells(name: str) -> list[Any]:
            if name not in columns:  # a checkpoint from before federated evaluation
                return [""] * len(columns["version"])
            negative = name in ("staleness", "eval_workers")
            blank = (lambda x: x < 0) if negative else (lambda x: x != x)  # NaN
            return ["" if blank(x) else x for x in np.asarray(columns[name]).tolist()]

        names = ["version", "wall_seconds", "accuracy", "loss", "staleness", "epsilon",
                 *FLOATS, "eval_workers"]
        table = {name: cells(name) for name in names}
        table["worker_id"] = unpack_strings(columns["worker_id"])
        table["worst_worker"] = unpack_strings(columns["worst_worker"]) \
            if "worst_worker" in columns else [""] * len(table["version"])
        return cls([dict(zip(HISTORY_FIELDS, values, strict=True))
                    for values in zip(*(table[f] for f in HISTORY_FIELDS), strict=True)])

    def curve(self, column: str = "accuracy") -> list[tuple[float, float]]:
        """(wall seconds, value) of every version with a value in `column`."""
        return [(float(r["wall_seconds"]), float(r[column]))
                for r in self.rows if r[column] != ""]
