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
from typing import Any

from common.amqp import Broker, Delivery
from common.errors import FedmqError
from common.topology import REPLY_TO, QueueSpec

WINDOW_BYTES = 256 * 1024 * 1024


def measure(url: str, body_bytes: int, seconds: float = 5.0,
            publishers: int = 4) -> dict[str, Any]:
    """Messages and MB per second through the broker for bodies of `body_bytes`. Each
    connection is used by one thread; an error in any of them is raised here once all have
    stopped."""
    queue = f"fedmq.bench.raw-{uuid.uuid4().hex[:8]}"
    window = max(2, WINDOW_BYTES // max(body_bytes, 1))
    consumed = published = 0
    done = threading.Event()
    errors: list[BaseException] = []
    brokers: list[Broker] = []
    running: list[threading.Thread] = []
    try:
        consumer = Broker(url, name="fedmq-bench-raw-consumer")
        brokers.append(consumer)
        # (x-expires: the broker drops it a minute after its last use if the delete below fails)
        consumer.declare_queue(QueueSpec(queue, {"x-queue-type": "quorum",
                                                 "x-expires": 60_000}))
        senders: list[Broker] = []
        for i in range(publishers):
            senders.append(Broker(url, name=f"fedmq-bench-raw-publisher-{i}"))
            brokers.append(senders[-1])

        def on_message(delivery: Delivery) -> None:
            nonlocal consumed
            consumer.ack(delivery)
            consumed += 1

        def serve() -> None:
            try:
                while not done.is_set():
                    consumer.process(0.05)
            except BaseException as exc:  # raised by measure() once every thread has stopped
                errors.append(exc)

        def publish(sender: Broker) -> None:
            nonlocal published
            try:
                while time.monotonic() - started < seconds and not errors:
                    if published - consumed >= window:
                        time.sleep(0.001)
                        continue
                    with lock:
                        published += 1
                    sender.publish("", queue, body)
            except BaseException as exc:
                errors.append(exc)

        consumer.consume(queue, on_message, prefetch=16)
        server = threading.Thread(target=serve, daemon=True)
        running.append(server)
        server.start()
        body, lock = bytes(body_bytes), threading.Lock()
        started = time.monotonic()
        threads = [threading.Thread(target=publish, args=(s,)) for s in senders]
        running.extend(threads)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 60
        while consumed < published and time.monotonic() < deadline and not errors:
            time.sleep(0.005)
        elapsed = time.monotonic() - started
        done.set()
        server.join()
        if errors:
            raise errors[0]
        if consumed < published:
            raise TimeoutError(f"{published - consumed} of {published} messages not consumed "
                               f"in 60 s")
        return {"messages_per_s": consumed / elapsed,
                "mb_per_s": consumed * body_bytes / elapsed / 1e6,
                "messages": consumed, "body_bytes": body_bytes, "queue": queue}
    finally:
        stop(done, errors, running)
        with contextlib.suppress(FedmqError):
            if brokers:
                brokers[0].delete_queue(queue)
        for broker in brokers:
            with contextlib.suppress(FedmqError):
                broker.close()


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
    done = threading.Event()
    errors: list[BaseException] = []
    answered = 0
    received = [0] * workers
    brokers: list[Broker] = []
    running: list[threading.Thread] = []
    try:
        relay_broker = Broker(url, name="fedmq-bench-relay")
        brokers.append(relay_broker)
        replies = relay_broker.open_channel(confirms=False)
        relay_broker.declare_queue(QueueSpec(queue, {"x-queue-type": "quorum"}))
        clients: list[Broker] = []
        for i in range(workers):
            clients.append(Broker(url, name=f"fedmq-bench-relay-worker-{i}"))
            brokers.append(clients[-1])

        def on_update(delivery: Delivery) -> None:
            nonlocal answered
            assert delivery.reply_to is not None
            replies.publish("", delivery.reply_to, model, persistent=False)
            relay_broker.ack(delivery)
            answered += 1

        def serve() -> None:
            try:
                while not done.is_set():
                    relay_broker.process(0.05)
            except BaseException as exc:  # raised by relay() once every thread has stopped
                errors.append(exc)

        def work(index: int) -> None:
            client, waiting = clients[index], [False]

            def on_model(_delivery: Delivery) -> None:
                waiting[0] = False
                received[index] += 1

            try:
                client.consume(REPLY_TO, on_model, auto_ack=True)
                while time.monotonic() - started < seconds and not errors:
                    waiting[0] = True
                    client.publish("", queue, body, reply_to=REPLY_TO)
                    deadline = time.monotonic() + 60
                    while waiting[0]:
                        if time.monotonic() > deadline or errors:
                            raise TimeoutError("the relay sent no model for 60 s")
                        client.process(0.01)
            except BaseException as exc:
                errors.append(exc)

        relay_broker.consume(queue, on_update, prefetch=16)
        server = threading.Thread(target=serve, daemon=True)
        running.append(server)
        server.start()
        started = time.monotonic()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        running.extend(threads)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        done.set()
        server.join()
        if errors:
            raise errors[0]
        updates = sum(received)
        return {"updates_per_s": updates / elapsed,
                "mb_per_s": updates * update_bytes / elapsed / 1e6,
                "updates": updates, "update_bytes": update_bytes, "model_bytes": model_bytes,
                "workers": workers, "relayed": answered}
    finally:
        stop(done, errors, running)
        with contextlib.suppress(FedmqError):
            if brokers:
                brokers[0].delete_queue(queue)
        for broker in brokers:
            with contextlib.suppress(FedmqError):
                broker.close()


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
