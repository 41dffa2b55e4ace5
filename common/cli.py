"""The `fedmq` command line. Every option comes from a settings class (common/settings.py), so each
flag has a FEDMQ_* environment variable twin and the help text of the field that defines it."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from common.errors import ConfigError
from common.keys_cli import keys
from common.settings import (
    CoordinatorSettings,
    RunSettings,
    StatusSettings,
    WatchSettings,
    WorkerSettings,
)
from common.tls_cli import tls

S = TypeVar("S", bound=BaseSettings)
F = TypeVar("F", bound=Callable[..., Any])


def _click_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _click_type(args[0])
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    if annotation is Path:
        return click.Path(path_type=Path)
    return {int: click.INT, float: click.FLOAT, bool: click.BOOL}.get(annotation, click.STRING)


def settings_options(cls: type[BaseSettings]) -> Callable[[F], F]:
    """Add one --flag per settings field (default None: unset flags defer to env and defaults)."""

    def decorate(command: F) -> F:
        for name, info in reversed(list(cls.model_fields.items())):
            default = info.default if info.default is not None else "unset"
            help_text = (f"{info.description} [env FEDMQ_{name.upper()}; default {default}]")
            flag = f"--{name.replace('_', '-')}"
            if info.annotation is bool:  # an on/off switch rather than an option taking a value
                command = click.option(f"{flag}/--no-{flag[2:]}", name, default=None,
                                       help=help_text)(command)
                continue
            command = click.option(flag, name, default=None,
                                   type=_click_type(info.annotation), help=help_text)(command)
        return command

    return decorate


def load_settings(cls: type[S], flags: dict[str, Any]) -> S:
    """Settings from the given flags over FEDMQ_* env vars over defaults; bad values exit 2."""
    try:
        return cls(**{key: value for key, value in flags.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.UsageError(problems) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("pika").setLevel(logging.WARNING)


@contextlib.contextmanager
def _config_errors() -> Iterator[None]:
    """A bad model, data file or dataset ends the command with its message, not a traceback."""
    try:
        yield
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fedmq")
def main() -> None:
    """fedmq: asynchronous federated learning over RabbitMQ.

    Workers keep their data and send only weight updates; the coordinator folds each update into
    the global model with a staleness-aware weight and broadcasts every new version.
    """


@main.command()
@settings_options(CoordinatorSettings)
def coordinator(**flags: Any) -> None:
    """Run the coordinator of one job until it reaches --max-updates or --target-accuracy."""
    settings = load_settings(CoordinatorSettings, flags)
    setup_logging(settings.log_level)
    from coordinator.service import CoordinatorService

    with _config_errors():
        service = CoordinatorService(settings)
        summary = service.run()
    click.echo(json.dumps(summary, indent=2, sort_keys=True))


@main.command()
@settings_options(WorkerSettings)
def worker(**flags: Any) -> None:
    """Run a worker: train on the local shard whenever a task arrives, until SIGTERM."""
    settings = load_settings(WorkerSettings, flags)
    setup_logging(settings.log_level)
    from worker.service import WorkerService

    with _config_errors():
        service = WorkerService(settings)
        service.run()


@main.command()
@settings_options(RunSettings)
def run(**flags: Any) -> None:
    """Run a whole job locally: one coordinator and --workers worker processes on the broker."""
    settings = load_settings(RunSettings, flags)
    setup_logging(settings.log_level)
    from common.launcher import run_local

    summary = run_local(settings)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))


@main.group()
def bench() -> None:
    """Benchmarks (scripts in bench/) on the real broker with real processes."""


@bench.command("time-to-accuracy")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Results directory.")
@click.option("--workers", default=8, show_default=True, help="Workers per strategy.")
@click.option("--slow-workers", default=2, show_default=True, help="How many are stragglers.")
@click.option("--slowdown", default=4.0, show_default=True, help="Straggler slowdown factor.")
@click.option("--target", default=0.95, show_default=True, help="Target held-out accuracy.")
@click.option("--seconds", default=60.0, show_default=True,
              help="Wall-clock budget of each strategy (from the moment all workers are ready).")
@click.option("--seed", default=0, show_default=True, help="Data, partition and model seed.")
@click.option("--buffer-size", default=4, show_default=True, help="FedBuff K.")
@click.option("--alpha", default=0.5, show_default=True, help="FedAsync mixing weight.")
@click.option("--amqp-url", envvar="FEDMQ_AMQP_URL",
              default="amqp://guest:guest@127.0.0.1:5672/%2F", show_default=True)
def time_to_accuracy(**options: Any) -> None:
    """fedavg vs fedasync vs fedbuff vs central training: time to --target on digits."""
    setup_logging("WARNING")
    from bench.time_to_accuracy import BenchConfig, describe
    from bench.time_to_accuracy import run as run_bench

    report = run_bench(BenchConfig(**options))
    click.echo(describe(report))
    click.echo(f"results: {options['out'] / 'results.json'}, "
               f"plot: {options['out'] / 'accuracy_vs_time.png'}")


@main.command()
@settings_options(WatchSettings)
def watch(**flags: Any) -> None:
    """Show the job's progress events (versions, evaluations, rejections) live, one per line."""
    settings = load_settings(WatchSettings, flags)
    setup_logging(settings.log_level)
    from common.watch import Watcher

    Watcher(settings, lambda line: click.echo(line)).run()


@main.command()
@settings_options(StatusSettings)
def status(**flags: Any) -> None:
    """Print the job's queues (depth, consumers, rates) from the management HTTP API."""
    settings = load_settings(StatusSettings, flags)
    setup_logging(settings.log_level)
    import requests

    from common.errors import FedmqError
    from common.status import render

    try:
        click.echo(render(settings))
    except (FedmqError, requests.HTTPError) as exc:
        raise click.ClickException(f"cannot read the management API: {exc}") from None


main.add_command(keys)
main.add_command(tls)


if __name__ == "__main__":
    main()
