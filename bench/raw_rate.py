"""The raw broker rate of a body size: what RabbitMQ alone sustains, for the scale bench's ratios.

`measure`: one body size moved once (the issue's baseline). `relay`: the broker alone doing the
message work a coordinator must do per update (an update in, a model out), the baseline that
says whether the coordinator or the broker bounds a job.

`measure`: `publishers` publishers (persistent messages, each waiting for its publisher
confirm, as workers publish updates) and one consumer (manual acks, prefetch 16, as the
coordinator consumes them) on a quorum queue like `fedmq.updates`, each on its own connection,
for `seconds`; at most a window of messages (about 256 MB) is outstanding so the broker's
memory stays bounded.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from common.amqp import Broker, Delivery
from common.errors import FedmqError
from common.topology import REPLY_TO, QueueSpec

WINDOW_BYTES = 256 * 1024 * 1024


class Crew:
    """A baseline's connections and the threads that use them, one connection per thread: an
    error in any thread is kept and raised by `check` once all have stopped; `close` ends the
    threads still running before it deletes the queue and closes the connections."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        self.running: list[threading.Thread] = []
        self.brokers: list[Broker] = []

    def connect(self, name: str) -> Broker:
        self.brokers.append(Broker(self.url, name=name))
        return self.brokers[-1]

    def start(self, target: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                target()
            except BaseException as exc:  # raised by check() once every thread has stopped
                self.errors.append(exc)

        thread = threading.Thread(target=guarded, daemon=True)
        self.running.append(thread)
        thread.start()
        return thread

    def serve(self, broker: Broker) -> threading.Thread:
        """A thread serving `broker`'s consumers until `done`."""
        def loop() -> None:
            while not self.done.is_set():
                broker.process(0.05)
        return self.start(loop)

    def check(self) -> None:
        """After the clients' threads: stop the serving ones, raise the first error."""
        self.done.set()
        for thread in self.running:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def close(self, queue: str) -> None:
        stop(self.done, self.errors, self.running)
        with contextlib.suppress(FedmqError):
            if self.brokers:
                self.brokers[0].delete(queue)
        for broker in self.brokers:
            with contextlib.suppress(FedmqError):
                broker.close()


def measure(url: str, body_bytes: int, seconds: float = 5.0,
            publishers: int = 4) -> dict[str, Any]:
    """Messages and MB per second through the broker for bodies of `body_bytes`. Each
    connection is used by one thread; an error in any of them is raised here once all have
    stopped."""
    queue = f"fedmq.bench.raw-{uuid.uuid4().hex[:8]}"
    window = max(2, WINDOW_BYTES // max(body_bytes, 1))
    consumed = published = 0
    crew = Crew(url)
    try:
        consumer = crew.connect("fedmq-bench-raw-consumer")
        # (x-expires: the broker drops it a minute after its last use if the delete below fails)
        consumer.declare_queue(QueueSpec(queue, {"x-queue-type": "quorum",
                                                 "x-expires": 60_000}))
        senders = [crew.connect(f"fedmq-bench-raw-publisher-{i}") for i in range(publishers)]

        def on_message(delivery: Delivery) -> None:
            nonlocal consumed
            consumer.ack(delivery)
            consumed += 1

        def publish(sender: Broker) -> None:
            nonlocal published
            while time.monotonic() - started < seconds and not crew.errors:
                if published - consumed >= window:
                    time.sleep(0.001)
                    continue
                with lock:
                    published += 1
                sender.publish("", queue, body)

        consumer.consume(queue, on_message, prefetch=16)
        crew.serve(consumer)
        body, lock = bytes(body_bytes), threading.Lock()
        started = time.monotonic()
        for thread in [crew.start(partial(publish, s)) for s in senders]:
            thread.join()
        deadline = time.monotonic() + 60
        while consumed < published and time.monotonic() < deadline and not crew.errors:
            time.sleep(0.005)
        elapsed = time.monotonic() - started
        crew.check()
        if consumed < published:
            raise TimeoutError(f"{published - consumed} of {published} messages not consumed "
                               f"in 60 s")
        return {"messages_per_s": consumed / elapsed,
                "mb_per_s": consumed * body_bytes / elapsed / 1e6,
                "messages": consumed, "body_bytes": body_bytes, "queue": queue}
    finally:
        crew.close(queue)


def relay(url: str, update_bytes: int, model_bytes: int, seconds: float = 5.0,
          workers: int = 4) -> dict[str, Any]:
    """The broker alone doing a coordinator's message work: per update, one update in and one
    model out.

    `workers` clients (a connection each) loop: publish an update-sized body (persistent, with
    its confirm, to a quorum queue) and wait for a model-sized reply through direct reply-to,
    as a worker waits for its next task's model. One relay (the coordinator's place) acks each
    update and answers it with a model-sized body on a channel without confirms, as the
    coordinator sends its model replies. Returns updates and update MB per second: the rate a
    coordinator that did nothing but move these bytes would reach. Each connection is used by
    one thread; an error in any of them is raised here once all have stopped.
    """
    queue = f"fedmq.bench.relay-{uuid.uuid4().hex[:8]}"
    model = bytes(model_bytes)
    body = bytes(update_bytes)
    answered = 0
    received = [0] * workers
    crew = Crew(url)
    try:
        relay_broker = crew.connect("fedmq-bench-relay")
        replies = relay_broker.open_channel(confirms=False)
        relay_broker.declare_queue(QueueSpec(queue, {"x-queue-type": "quorum"}))
        clients = [crew.connect(f"fedmq-bench-relay-worker-{i}") for i in range(workers)]

        def on_update(delivery: Delivery) -> None:
            nonlocal answered
            assert delivery.reply_to is not None
            replies.publish("", delivery.reply_to, model, persistent=False)
            relay_broker.ack(delivery)
            answered += 1

        def work(index: int) -> None:
            client, waiting = clients[index], [False]

            def on_model(_delivery: Delivery) -> None:
                waiting[0] = False
                received[index] += 1

            client.consume(REPLY_TO, on_model, auto_ack=True)
            while time.monotonic() - started < seconds and not crew.errors:
                waiting[0] = True
                client.publish("", queue, body, reply_to=REPLY_TO)
                deadline = time.monotonic() + 60
                while waiting[0]:
                    if time.monotonic() > deadline or crew.errors:
                        raise TimeoutError("the relay sent no model for 60 s")
                    client.process(0.01)

        relay_broker.consume(queue, on_update, prefetch=16)
        crew.serve(relay_broker)
        started = time.monotonic()
        for thread in [crew.start(partial(work, i)) for i in range(workers)]:
            thread.join()
        elapsed = time.monotonic() - started
        crew.check()
        updates = sum(received)
        return {"updates_per_s": updates / elapsed,
                "mb_per_s": updates * update_bytes / elapsed / 1e6,
                "updates": updates, "update_bytes": update_bytes, "model_bytes": model_bytes,
                "workers": workers, "relayed": answered}
    finally:
        crew.close(queue)


def stop(done: threading.Event, errors: list[BaseException],
         running: list[threading.Thread]) -> None:
    """End every thread still using a connection (left early: an interrupt, a failed start)
    before the connections are used for cleanup: pika connections are not thread-safe."""
    done.set()
    if any(t.is_alive() for t in running):
        errors.append(RuntimeError("stopped"))  # ends every loop
    for t in running:
        if t.ident is not None:
            t.join(70)  # (a client waits at most 60 s for a reply)
