"""The `fedmq` command: one click group with a subcommand per role (coordinator, worker, helper)
and per operator tool (run, watch, status, keys, tls, bench). Every option comes from a settings
class (common/settings.py for the roles, fedmq/settings.py for the tools) through fedmq/options.py,
so each flag has a FEDMQ_* environment variable twin and the help text of the field that defines
it.

The roles, the tools' services and the benchmarks are imported only inside the command that runs
them, so `--help` stays instant and nothing below this module imports it back."""

from __future__ import annotations

import json
from typing import Any

import click

from common.settings import CoordinatorSettings, WorkerSettings
from fedmq.keys import keys
from fedmq.options import config_errors, load_settings, settings_options, setup_logging
from fedmq.settings import RunSettings, StatusSettings, WatchSettings
from fedmq.tls import tls
from helper.settings import HelperRoleSettings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="fedmq")
def main() -> None:
    """fedmq: asynchronous federated learning over RabbitMQ.

    Workers keep their data and send only weight updates; the coordinator folds each update into
    the global model with a staleness-aware weight and announces every new version.
    """


@main.command()
@settings_options(CoordinatorSettings)
def coordinator(**flags: Any) -> None:
    """Run the coordinator of one job until it reaches --max-updates or --target-accuracy."""
    settings = load_settings(CoordinatorSettings, flags)
    setup_logging(settings.log_level)
    from coordinator.session import Coordinator

    with config_errors():
        service = Coordinator(settings)
        summary = service.run()
    click.echo(json.dumps(summary, indent=2, sort_keys=True))


@main.command()
@settings_options(WorkerSettings)
def worker(**flags: Any) -> None:
    """Run a worker: train on the local shard whenever a task arrives, until SIGTERM."""
    settings = load_settings(WorkerSettings, flags)
    setup_logging(settings.log_level)
    from worker.service import WorkerService

    with config_errors():
        service = WorkerService(settings)
        service.run()


@main.command()
@settings_options(HelperRoleSettings)
def helper(**flags: Any) -> None:
    """Run the secure-aggregation helper: answer whole buffers' mask sums, until SIGTERM."""
    settings = load_settings(HelperRoleSettings, flags)
    setup_logging(settings.log_level)
    from helper.service import HelperService

    with config_errors():
        HelperService(settings).run()


@main.command()
@settings_options(RunSettings)
def run(**flags: Any) -> None:
    """Run a whole job locally: one coordinator and --workers worker processes on the broker."""
    settings = load_settings(RunSettings, flags)
    setup_logging(settings.log_level)
    from fedmq.launcher import run_local

    with config_errors():
        summary = run_local(settings)
    click.echo(json.dumps(summary, indent=2, sort_keys=True))


class _BenchGroup(click.Group):
    """The benchmark scripts of bench/, each owning its click `main`; a script is imported only
    when its command is used (or its help shown)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return ["big-model", "compression", "scale", "time-to-accuracy"]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "time-to-accuracy":
            from bench.time_to_accuracy import main as time_to_accuracy

            return time_to_accuracy
        if cmd_name == "scale":
            from bench.scale import main as scale

            return scale
        if cmd_name == "big-model":
            from bench.big_model import main as big_model

            return big_model
        if cmd_name == "compression":
            from bench.compression import main as compression

            return compression
        return None


@main.group(cls=_BenchGroup)
def bench() -> None:
    """Benchmarks (scripts in bench/) on the real broker with real processes."""


@main.command()
@settings_options(WatchSettings)
def watch(**flags: Any) -> None:
    """Show the job's progress events (versions, evaluations, rejections) live, one per line."""
    settings = load_settings(WatchSettings, flags)
    setup_logging(settings.log_level)
    from fedmq.watch import Watcher

    Watcher(settings, lambda line: click.echo(line)).run()


@main.command()
@settings_options(StatusSettings)
def status(**flags: Any) -> None:
    """Print the job's queues (depth, consumers, rates) from the management HTTP API."""
    settings = load_settings(StatusSettings, flags)
    setup_logging(settings.log_level)
    import requests

    from common.errors import FedmqError
    from fedmq.status import render

    try:
        click.echo(render(settings))
    except (FedmqError, requests.HTTPError) as exc:
        raise click.ClickException(f"cannot read the management API: {exc}") from None


main.add_command(keys)
main.add_command(tls)

