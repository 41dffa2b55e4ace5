"""What the benches' commands share: the click context, the `--out` and `--amqp-url` options, and
the closing line that says where the results went."""

from __future__ import annotations

from pathlib import Path

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"

out_option = click.option("--out", type=click.Path(path_type=Path), required=True,
                          help="Results directory.")
amqp_url_option = click.option("--amqp-url", envvar="FEDMQ_AMQP_URL", default=LOCAL_BROKER,
                               show_default=True)


def echo_results(out: Path, plot: str | None = "accuracy_vs_time.png") -> None:
    """Say where results.json (and the plot, if any) were written."""
    click.echo(f"results: {out / 'results.json'}" + (f", plot: {out / plot}" if plot else ""))
