"""The default max_staleness follows the fleet: twice the versions made while a task trains."""

from __future__ import annotations

import pytest

from common.settings import CoordinatorSettings


@pytest.mark.parametrize(("strategy", "concurrency", "buffer_size", "limit"), [
    ("fedasync", 3, 4, 50),      # the digits demo: unchanged
    ("fedasync", 128, 4, 256),   # every update is a version: ~128 versions per task
    ("fedbuff", 128, 4, 64),     # a version per 4 updates: ~32 versions per task
    ("fedbuff", 1000, 10, 200),
    ("fedbuff", 40, 4, 50),      # never below the old default
])
def test_unset_max_staleness_is_twice_the_versions_per_task_and_at_least_50(
        strategy: str, concurrency: int, buffer_size: int, limit: int) -> None:
    settings = CoordinatorSettings(strategy=strategy, concurrency=concurrency,
                                   buffer_size=buffer_size)
    assert settings.max_staleness is None and settings.staleness_limit() == limit


def test_a_given_max_staleness_is_kept() -> None:
    settings = CoordinatorSettings(concurrency=1000, max_staleness=7)
    assert settings.staleness_limit() == 7
