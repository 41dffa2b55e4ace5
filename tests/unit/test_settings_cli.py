"""Settings come from a flag, else a FEDMQ_* environment variable, else the default; bad values
are usage errors; every command has --help listing each of its settings as a flag.

The commands are run for real through click's CliRunner, with the services they would start
replaced by stubs that only record the settings they were given: no broker, no processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from pydantic_settings import BaseSettings

from common.settings import CoordinatorSettings, WorkerSettings
from fedmq.cli import main
from fedmq.options import load_settings, settings_options
from fedmq.settings import RunSettings, StatusSettings, WatchSettings
from fedmq.settings_doc import COMMANDS


@pytest.fixture(autouse=True)
def no_fedmq_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own FEDMQ_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("FEDMQ_"):
            monkeypatch.delenv(name)


@pytest.fixture()
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseSettings]]:
    """Replace what each command would start with stubs recording the settings they receive."""
    received: list[BaseSettings] = []

    class Service:
        def __init__(self, settings: BaseSettings, *_: object) -> None:
            received.append(settings)

        def run(self) -> dict[str, Any]:
            return {}

    def record(settings: BaseSettings) -> Any:
        received.append(settings)
        return {}

    stubs: dict[str, dict[str, Any]] = {
        "coordinator.session": {"Coordinator": Service},
        "worker.service": {"WorkerService": Service},
        "helper.service": {"HelperService": Service},
        "fedmq.launcher": {"run_local": record},
        "fedmq.watch": {"Watcher": Service},
        "fedmq.status": {"render": lambda settings: str(record(settings))},
    }
    for name, attributes in stubs.items():
        module = types.ModuleType(name)
        for attribute, value in attributes.items():
            setattr(module, attribute, value)
        monkeypatch.setitem(sys.modules, name, module)
    yield received


def fedmq(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, terminal_width=200)


# ---------------------------------------------------------------- precedence

PRECEDENCE = [
    # settings class, field, value in the environment, what it parses to, value of the flag
    (CoordinatorSettings, "max_updates", "77", 77, 5),
    (CoordinatorSettings, "alpha", "0.9", 0.9, 0.25),
    (CoordinatorSettings, "strategy", "fedbuff", "fedbuff", "fedavg"),
    (CoordinatorSettings, "stop_at_target", "false", False, True),
    (CoordinatorSettings, "target_accuracy", "0.9", 0.9, 0.95),
    (CoordinatorSettings, "out", "/tmp/from-env", Path("/tmp/from-env"), Path("from-flag")),
    (WorkerSettings, "amqp_url", "amqp://env:5672/%2F", "amqp://env:5672/%2F",
     "amqp://flag:5672/%2F"),
    (WorkerSettings, "shard_index", "1", 1, 2),
    (WorkerSettings, "partition", "iid", "iid", "dirichlet"),
    (RunSettings, "workers", "5", 5, 2),
    (WatchSettings, "events", "rejected", "rejected", "version"),
    (StatusSettings, "management_url", "http://env:15672", "http://env:15672",
     "http://flag:15672"),
]


@pytest.mark.parametrize(("cls", "field", "env", "from_env", "flag"), PRECEDENCE,
                         ids=[f"{c.__name__}.{f}" for c, f, *_ in PRECEDENCE])
def test_flag_over_environment_over_default(monkeypatch: pytest.MonkeyPatch,
                                            cls: type[BaseSettings], field: str, env: str,
                                            from_env: object, flag: object) -> None:
    # Given nothing set, then the field has its default
    default = cls.model_fields[field].default
    assert getattr(load_settings(cls, {field: None}), field) == default
    # Given FEDMQ_<FIELD> in the environment, then it beats the default (an unset flag defers)
    monkeypatch.setenv(f"FEDMQ_{field.upper()}", env)
    assert getattr(load_settings(cls, {field: None}), field) == from_env
    # Given also the flag, then the flag wins
    assert getattr(load_settings(cls, {field: flag}), field) == flag


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_command_with_no_flags_gets_the_defaults(command: str,
                                                   started: list[BaseSettings]) -> None:
    # Given no flags and no FEDMQ_* variables, when the command runs
    result = fedmq(command)
    # Then what it starts receives exactly the defaults
    assert result.exit_code == 0, result.output
    assert started == [COMMANDS[command]()]


def test_the_real_command_takes_flags_over_environment(started: list[BaseSettings]) -> None:
    # Given FEDMQ_MAX_UPDATES and FEDMQ_ALPHA in the environment, and an --alpha flag
    env = {"FEDMQ_MAX_UPDATES": "77", "FEDMQ_ALPHA": "0.9"}
    # When `fedmq coordinator --alpha 0.3 --no-stop-at-target` runs
    result = fedmq("coordinator", "--alpha", "0.3", "--no-stop-at-target", env=env)
    # Then the coordinator gets the flag's alpha, the environment's max_updates, and defaults
    assert result.exit_code == 0, result.output
    (settings,) = started
    assert isinstance(settings, CoordinatorSettings)
    assert (settings.alpha, settings.max_updates, settings.stop_at_target) == (0.3, 77, False)
    assert settings.strategy == "fedasync"


def test_the_real_worker_reads_its_broker_url_from_the_environment(
        started: list[BaseSettings]) -> None:
    result = fedmq("worker", "--shard-index", "2", env={"FEDMQ_AMQP_URL": "amqp://h:1/%2F"})
    assert result.exit_code == 0, result.output
    (settings,) = started
    assert isinstance(settings, WorkerSettings)
    assert (settings.amqp_url, settings.shard_index) == ("amqp://h:1/%2F", 2)


def test_settings_options_build_flags_that_defer_to_the_environment() -> None:
    # Given a command built from a settings class, like every fedmq command
    @click.command()
    @settings_options(WatchSettings)
    def show(**flags: Any) -> None:
        click.echo(load_settings(WatchSettings, flags).model_dump_json())

    # When it runs with one flag and one variable for another field
    result = CliRunner().invoke(show, ["--max-events", "3"], env={"FEDMQ_EVENTS": "finished"})
    # Then each comes from where it was set and the rest are defaults
    assert result.exit_code == 0, result.output
    values = json.loads(result.output)
    assert (values["max_events"], values["events"], values["watch_seconds"]) == (3, "finished",
                                                                                 0.0)


# ---------------------------------------------------------------- invalid values

INVALID_FLAGS = [
    (CoordinatorSettings, {"alpha": 1.5}, "alpha"),
    (CoordinatorSettings, {"alpha": 0.0}, "alpha"),
    (CoordinatorSettings, {"strategy": "fedsgd"}, "strategy"),
    (CoordinatorSettings, {"staleness": "linear"}, "staleness"),
    (CoordinatorSettings, {"max_updates": 0}, "max_updates"),
    (CoordinatorSettings, {"test_fraction": 1.0}, "test_fraction"),
    (CoordinatorSettings, {"server_momentum": 1.0}, "server_momentum"),
    (CoordinatorSettings, {"metrics_port": 70000}, "metrics_port"),
    (CoordinatorSettings, {"target_accuracy": 1.5}, "target_accuracy"),
    (WorkerSettings, {"shard_index": 3, "num_shards": 3}, "shard_index"),
    (WorkerSettings, {"shard_index": -1}, "shard_index"),
    (WorkerSettings, {"slowdown": 0.5}, "slowdown"),
    (WorkerSettings, {"job": "two words"}, "job"),
    (WorkerSettings, {"heartbeat": -1}, "heartbeat"),
    (WorkerSettings, {"dirichlet_alpha": 0}, "dirichlet_alpha"),
    (RunSettings, {"workers": 0}, "workers"),
    (WatchSettings, {"max_events": -1}, "max_events"),
]


@pytest.mark.parametrize(("cls", "flags", "field"), INVALID_FLAGS,
                         ids=[f"{c.__name__}-{f}" for c, f, _ in INVALID_FLAGS])
def test_invalid_flag_values_are_usage_errors(cls: type[BaseSettings], flags: dict[str, object],
                                              field: str) -> None:
    with pytest.raises(click.UsageError, match=field):
        load_settings(cls, flags)


@pytest.mark.parametrize(("variable", "value"), [("FEDMQ_HEARTBEAT", "often"),
                                                 ("FEDMQ_PARTITION", "random"),
                                                 ("FEDMQ_NUM_SHARDS", "0"),
                                                 ("FEDMQ_TF_THREADS", "1.5")])
def test_invalid_environment_values_are_usage_errors(monkeypatch: pytest.MonkeyPatch,
                                                     variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(click.UsageError, match=variable.removeprefix("FEDMQ_").lower()):
        load_settings(WorkerSettings, {})


@pytest.mark.parametrize(("args", "env", "message"), [
    (["coordinator", "--alpha", "1.5"], None, "alpha"),
    (["worker", "--shard-index", "5", "--num-shards", "2"], None, "shard_index"),
    (["run", "--workers", "0"], None, "workers"),
    (["coordinator"], {"FEDMQ_STRATEGY": "fedsgd"}, "strategy"),
    (["coordinator", "--max-updates", "lots"], None, "'lots' is not a valid integer"),
    (["worker", "--partition", "random"], None, "'random' is not one of"),
    (["status", "--no-such-flag"], None, "No such option"),
])
def test_a_command_with_a_bad_value_exits_2_without_starting(
        args: list[str], env: dict[str, str] | None, message: str,
        started: list[BaseSettings]) -> None:
    # Given a bad flag or variable, when the command runs
    result = fedmq(*args, env=env)
    # Then it stops with a usage error naming the problem, before starting anything
    assert result.exit_code == 2, result.output
    assert message in result.output and started == []


# ---------------------------------------------------------------- help

def test_every_command_is_covered_here() -> None:
    plain = {name for name, command in main.commands.items()
             if not isinstance(command, click.Group)}
    assert plain == set(COMMANDS)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_top_level_help_lists_every_command(flag: str) -> None:
    result = fedmq(flag)
    assert result.exit_code == 0, result.output
    assert "asynchronous federated learning" in result.output
    for command in main.commands:
        assert command in result.output


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_help_lists_every_setting_as_a_flag(command: str) -> None:
    # Given a command's settings class, when its --help is shown
    result = fedmq(command, "--help")
    # Then it succeeds and names every field as a --flag with its FEDMQ_* variable
    assert result.exit_code == 0, result.output
    for name in COMMANDS[command].model_fields:
        assert f"--{name.replace('_', '-')} " in result.output, name
        assert f"FEDMQ_{name.upper()}" in result.output, name


@pytest.mark.parametrize("args", [["bench", "--help"], ["bench", "time-to-accuracy", "--help"]])
def test_the_bench_commands_have_help(args: list[str]) -> None:
    result = fedmq(*args)
    assert result.exit_code == 0, result.output
    assert "time-to-accuracy" in result.output or "--seconds" in result.output


def test_help_does_not_load_tensorflow() -> None:
    # Given a fresh interpreter, when `fedmq coordinator --help` is rendered
    code = ("import sys; from click.testing import CliRunner; from fedmq.cli import main; "
            "r = CliRunner().invoke(main, ['coordinator', '--help']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    # Then neither TensorFlow nor Keras was imported (help stays instant)
    assert done.stdout.strip() == "[]"
