"""How `fedmq status` and `fedmq watch` present what they read."""

from __future__ import annotations

from typing import Any

from common.messages import Event
from fedmq.settings import StatusSettings
from fedmq.status import render, vhost_of
from fedmq.watch import format_event


class FakeManagement:
    """The two calls `render` makes, answered from fixed data shaped like the real API's."""

    def queues(self, prefix: str) -> list[dict[str, Any]]:
        return [{"name": "fedmq.tasks", "type": "quorum", "messages_ready": 2,
                 "messages_unacknowledged": 3, "consumers": 3,
                 "message_stats": {"publish_details": {"rate": 1.25},
                                   "deliver_get_details": {"rate": 1.0}}},
                {"name": "fedmq.dead", "type": "classic", "messages_ready": 0,
                 "messages_unacknowledged": 0, "consumers": 0}]

    def exchanges(self, prefix: str) -> list[dict[str, Any]]:
        return [{"name": "fedmq.model", "type": "fanout",
                 "message_stats": {"publish_in_details": {"rate": 0.5}}}]


def test_status_prints_queues_with_depth_consumers_and_rates() -> None:
    output = render(StatusSettings(), FakeManagement())  # type: ignore[arg-type]
    rows = {line.split()[0]: line.split() for line in output.splitlines() if line.strip()}
    assert rows["fedmq.tasks"] == ["fedmq.tasks", "quorum", "2", "3", "3", "1.2", "1.0"]
    assert rows["fedmq.dead"][2:5] == ["0", "0", "0"]
    assert rows["fedmq.model"] == ["fedmq.model", "fanout", "0.5", "0.0"]
    assert rows["queue"][:5] == ["queue", "type", "ready", "unacked", "consumers"]


def test_the_vhost_comes_from_the_amqp_url() -> None:
    assert vhost_of("amqp://u:p@rabbitmq:5672/fedmq") == "fedmq"
    assert vhost_of("amqp://u:p@host:5672/%2F") == "/"
    assert vhost_of("amqp://u:p@host:5672") == "/"


def test_watch_prints_one_line_per_event() -> None:
    line = format_event(Event(name="version", job="demo",
                              fields={"version": 12, "staleness": 1, "worker": "w0"}, at=0.0))
    assert line.endswith("[demo] version     version=12 staleness=1 worker=w0")
