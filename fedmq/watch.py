"""`fedmq watch`: print the coordinator's progress events (fedmq.events) live, one line each.

The watcher binds a private, server-named queue to the events exchange, so it needs no permission
on the job's queues and never slows the job down: when nobody watches, events go nowhere.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime

from common import wire
from common.amqp import Delivery
from common.connection import Connector, await_declared
from common.errors import DecodeError
from common.messages import Event
from common.reconnect import run_with_reconnect
from common.topology import Topology
from fedmq.settings import WatchSettings


def format_event(event: Event) -> str:
    """`12:00:01.250 version     version=12 staleness=1 worker=w0` (job first when there is one)."""
    stamp = datetime.fromtimestamp(event.at).strftime("%H:%M:%S.%f")[:-3]
    fields = " ".join(f"{key}={value}" for key, value in event.fields.items())
    job = f"[{event.job}] " if event.job else ""
    return f"{stamp} {job}{event.name:<11} {fields}".rstrip()


class Watcher:
    """Prints events until --max-events, --watch-seconds or a signal."""

    def __init__(self, settings: WatchSettings, echo: Callable[[str], None]) -> None:
        self.settings = settings
        self.echo = echo
        self.topology = Topology(settings.job)
        self.stop = threading.Event()
        self.seen = 0
        self.connector = Connector(settings, "fedmq-watch")

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        if self.settings.watch_seconds:
            timer = threading.Timer(self.settings.watch_seconds, self.stop.set)
            timer.daemon = True
            timer.start()
        run_with_reconnect(self._session, self.stop)
        return self.seen

    def _session(self) -> None:
        broker = self.connector.connect()
        try:
            if not await_declared(broker, self.stop, exchanges=[self.topology.events]):
                return
            queue = broker.private_queue(self.topology.events, routing_key=self.settings.events)
            broker.consume(queue, self._on_event, prefetch=0, auto_ack=True)
            self.echo(f"{time.strftime('%H:%M:%S')} watching {self.topology.events} "
                      f"({self.settings.events})")
            while not self.stop.is_set():
                broker.process(0.25)
        finally:
            broker.close()

    def _on_event(self, delivery: Delivery) -> None:
        try:
            event = wire.decode(delivery.body, Event, self.settings.max_message_bytes)
        except DecodeError as exc:
            self.echo(f"(undecodable event: {exc.reason})")
            return
        self.echo(format_event(event))
        self.seen += 1
        if self.settings.max_events and self.seen >= self.settings.max_events:
            self.stop.set()
