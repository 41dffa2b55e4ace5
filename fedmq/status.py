"""`fedmq status`: the job's queues and exchanges as the management HTTP API sees them."""

from __future__ import annotations

from typing import Any

from common.broker_urls import vhost_of
from common.topology import Topology
from fedmq.management import Management
from fedmq.settings import StatusSettings

QUEUE_COLUMNS = ("queue", "type", "ready", "unacked", "consumers", "in/s", "out/s")
EXCHANGE_COLUMNS = ("exchange", "type", "in/s", "out/s")


def _rate(item: dict[str, Any], stat: str) -> str:
    details = item.get("message_stats", {}).get(f"{stat}_details", {})
    return f"{float(details.get('rate', 0.0)):.1f}"


def queue_rows(queues: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(q["name"], str(q.get("type", "classic")), str(q.get("messages_ready", 0)),
             str(q.get("messages_unacknowledged", 0)), str(q.get("consumers", 0)),
             _rate(q, "publish"), _rate(q, "deliver_get"))
            for q in sorted(queues, key=lambda q: str(q["name"]))]


def exchange_rows(exchanges: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(e["name"], str(e.get("type", "")), _rate(e, "publish_in"), _rate(e, "publish_out"))
            for e in sorted(exchanges, key=lambda e: str(e["name"]))]


def table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A plain text table: the first column left-aligned, numbers right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows,
                                                                        strict=False)]
    lines = []
    for row in (columns, *rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                          strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render(settings: StatusSettings, management: Management | None = None) -> str:
    """The status report of the job named by the settings."""
    vhost = vhost_of(settings.amqp_urls[0])  # one vhost for all (common/broker_urls.py)
    client = management or Management(settings.management_url, vhost=vhost)
    prefix = Topology(settings.job).tasks.removesuffix("tasks")
    queues = client.queues(prefix)
    exchanges = client.exchanges(prefix)
    header = f"vhost {vhost}: {len(queues)} queues, {len(exchanges)} exchanges named {prefix}*"
    return "\n\n".join([header, table(QUEUE_COLUMNS, queue_rows(queues)),
                        table(EXCHANGE_COLUMNS, exchange_rows(exchanges))])
