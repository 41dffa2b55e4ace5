"""Settings come from flags, then FEDMQ_* variables, then defaults; every field is a flag."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from common.cli import load_settings, main
from common.settings import CoordinatorSettings, RunSettings, WorkerSettings


def test_flag_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(CoordinatorSettings, {}).max_updates == 150
    monkeypatch.setenv("FEDMQ_MAX_UPDATES", "77")
    assert load_settings(CoordinatorSettings, {"max_updates": None}).max_updates == 77
    assert load_settings(CoordinatorSettings, {"max_updates": 5}).max_updates == 5


@pytest.mark.parametrize(("cls", "flags", "message"), [
    (CoordinatorSettings, {"alpha": 1.5}, "alpha"),
    (CoordinatorSettings, {"strategy": "fedsgd"}, "strategy"),
    (WorkerSettings, {"shard_index": 3, "num_shards": 3}, "shard_index"),
    (WorkerSettings, {"slowdown": 0.5}, "slowdown"),
])
def test_invalid_settings_are_usage_errors(cls: type, flags: dict[str, object],
                                           message: str) -> None:
    with pytest.raises(click.UsageError, match=message):
        load_settings(cls, flags)


def test_bad_environment_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDMQ_HEARTBEAT", "often")
    with pytest.raises(click.UsageError, match="heartbeat"):
        load_settings(WorkerSettings, {})


@pytest.mark.parametrize(("command", "cls"), [("coordinator", CoordinatorSettings),
                                              ("worker", WorkerSettings), ("run", RunSettings)])
def test_every_setting_is_a_documented_flag(command: str, cls: type) -> None:
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for name in cls.model_fields:
        assert f"--{name.replace('_', '-')}" in result.output
        assert f"FEDMQ_{name.upper()}" in result.output


def test_top_level_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("coordinator", "worker", "run", "bench"):
        assert command in result.output
    bench = CliRunner().invoke(main, ["bench", "time-to-accuracy", "--help"])
    assert bench.exit_code == 0 and "--seconds" in bench.output
