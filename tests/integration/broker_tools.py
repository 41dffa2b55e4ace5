"""Broker operations only the tests need: a tap queue of their own, deleting a job's exchanges,
and whether a connection is open.

They act on the channel of a `common.amqp.Broker`, inside its error translation, so a refusal
is a BrokerRefused and a lost connection a BrokerUnavailable, as for the product's own calls.
"""

from __future__ import annotations

from typing import Any

from common.amqp import Broker
from common.amqp_errors import translated as _translated


def declare_queue(broker: Broker, name: str, bind_to: str | None = None, *,
                  durable: bool = True, routing_key: str = "",
                  arguments: dict[str, Any] | None = None) -> None:
    """Declare a queue (classic unless `arguments` say otherwise), optionally bound to an
    exchange with `routing_key`."""
    with _translated():
        broker._channel.queue_declare(name, durable=durable, arguments=arguments)
        if bind_to is not None:
            broker._channel.queue_bind(name, bind_to, routing_key=routing_key)


def is_open(broker: Broker) -> bool:
    """Whether the broker's connection and its channel are both open."""
    return bool(broker._connection.is_open and broker._channel.is_open)
