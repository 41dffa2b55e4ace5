"""What a robust aggregation rule needs to work: the one copy of these feasibility rules, asked
by the coordinator's settings (at start) and by the strategy (coordinator/strategies/robust.py)."""

from __future__ import annotations

AGGREGATORS = ("mean", "median", "trimmed_mean", "krum", "multi_krum")


def minimum_updates(aggregator: str, f: int) -> int:
    """The fewest updates a robust rule can combine: 2f+3 for Krum, 2f+1 for trimmed mean."""
    if aggregator in ("krum", "multi_krum"):
        return 2 * f + 3
    if aggregator == "trimmed_mean":
        return 2 * f + 1
    return 1


def robust_problem(aggregator: str, f: int, buffer_size: int) -> str | None:
    """Why `aggregator` tolerating `f` attackers cannot combine buffers of `buffer_size` updates
    (None: it can). The one copy of these rules: settings and the strategy both ask it."""
    if aggregator not in AGGREGATORS:
        return f"unknown aggregator {aggregator!r}; choose from {', '.join(AGGREGATORS)}"
    if aggregator in ("krum", "multi_krum") and buffer_size < minimum_updates(aggregator, f):
        return (f"{aggregator} tolerating f={f} needs buffer_size >= 2f+3 = {2 * f + 3}, "
                f"got {buffer_size}")
    if aggregator == "trimmed_mean" and buffer_size < minimum_updates(aggregator, f):
        return f"trimmed_mean cannot trim {f} from each end of {buffer_size} updates"
    return None
