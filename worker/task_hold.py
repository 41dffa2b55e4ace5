"""The task delivery a worker holds while it trains, and when to stop holding it.

A task stays unacked while it trains, so that the broker gives it to another worker at once if
this one dies. RabbitMQ closes the channel of a delivery left unacked past its consumer_timeout
(30 minutes by default; 406 PRECONDITION_FAILED), which would throw the training away and cost
the shard lease. So a task still training after --task-hold-seconds (default 15 minutes, half the
broker's default) is acked early; from then on the coordinator's task deadline re-issues it if
the worker dies (at-least-once still holds, only later). docs/reliability.md, "Consumer timeout".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from common.amqp import Delivery


@dataclass
class TaskHold:
    hold_seconds: float
    delivery: Delivery | None = None
    since: float = 0.0

    def start(self, delivery: Delivery) -> None:
        self.delivery, self.since = delivery, time.monotonic()

    def forget(self) -> None:
        """The connection that delivered it is gone: the broker has it back already."""
        self.delivery = None

    def overdue(self) -> Delivery | None:
        """The delivery to ack now, because it has been held for hold_seconds (once)."""
        if self.delivery is None or time.monotonic() - self.since < self.hold_seconds:
            return None
        delivery, self.delivery = self.delivery, None
        return delivery

    def settle(self, delivery: Delivery) -> bool:
        """Whether `delivery` is still held (and must be acked or rejected now); it is let go."""
        if self.delivery is not delivery:
            return False
        self.delivery = None
        return True
