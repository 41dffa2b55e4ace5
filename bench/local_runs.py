"""Benches that compare configurations of a whole local job (`fedmq run`: a coordinator and its
workers on the local broker), one after the other: the summary figures and accuracy curve of
each, and the bench's configuration as JSON."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from coordinator.results import read_curve
from fedmq.launcher import run_local
from fedmq.settings import RunSettings

log = logging.getLogger("fedmq.bench")

Curve = list[tuple[float, float]]


def run_each(runs: Mapping[str, RunSettings], keys: Sequence[str],
             ) -> tuple[dict[str, dict[str, Any]], dict[str, Curve]]:
    """Run each named job in turn: per name, its summary's `keys` and its accuracy curve (read
    from the history.csv in its --out)."""
    results: dict[str, dict[str, Any]] = {}
    curves: dict[str, Curve] = {}
    for name, settings in runs.items():
        log.warning("running %s (%s) for %.0fs with %d workers", name, settings.strategy,
                    settings.max_seconds or 0, settings.workers)
        summary = run_local(settings)
        curves[name] = read_curve(settings.out / "history.csv")
        results[name] = {key: summary[key] for key in keys}
    return results, curves


def config_json(config: Any) -> dict[str, Any]:
    """A bench's frozen dataclass configuration as JSON values (paths as strings)."""
    return {key: str(value) if isinstance(value, Path) else value
            for key, value in asdict(config).items()}
