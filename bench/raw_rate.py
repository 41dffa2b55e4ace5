"""The raw broker rate of a body size: what RabbitMQ alone sustains, for the scale bench's ratio.

`publishers` publishers (persistent messages, each waiting for its publisher confirm, as workers
publish updates) and one consumer (manual acks, prefetch 16, as the coordinator consumes them)
on a quorum queue like `fedmq.updates`, each on its own connection, for `seconds`; at most a
window of messages (about 256 MB) is outstanding so the broker's memory stays bounded.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from common.amqp import Broker, Delivery

WINDOW_BYTES = 256 * 1024 * 1024


def measure(url: str, body_bytes: int, seconds: float = 5.0,
            publishers: int = 4) -> dict[str, Any]:
    """Messages and MB per second through the broker for bodies of `body_bytes`."""
    queue = f"fedmq.bench.raw-{uuid.uuid4().hex[:8]}"
    senders = [Broker(url, name=f"fedmq-bench-raw-publisher-{i}") for i in range(publishers)]
    publisher = senders[0]
    consumer = Broker(url, name="fedmq-bench-raw-consumer")
    window = max(2, WINDOW_BYTES // max(body_bytes, 1))
    consumed = 0
    done = threading.Event()
    try:
        publisher._channel.queue_declare(queue, durable=True,
                                         arguments={"x-queue-type": "quorum"})

        def on_message(delivery: Delivery) -> None:
            nonlocal consumed
            consumer.ack(delivery)
            consumed += 1

        consumer.consume(queue, on_message, prefetch=16)

        def serve() -> None:
            while not done.is_set():
                consumer.process(0.05)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        body = bytes(body_bytes)
        published, started = 0, time.monotonic()
        lock = threading.Lock()

        def publish(sender: Broker) -> None:
            nonlocal published
            while time.monotonic() - started < seconds:
                if published - consumed >= window:
                    time.sleep(0.001)
                    continue
                with lock:
                    published += 1
                sender.publish("", queue, body)

        threads = [threading.Thread(target=publish, args=(s,)) for s in senders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        deadline = time.monotonic() + 60
        while consumed < published and time.monotonic() < deadline:
            time.sleep(0.005)
        elapsed = time.monotonic() - started
        done.set()
        thread.join(5)
        return {"messages_per_s": consumed / elapsed,
                "mb_per_s": consumed * body_bytes / elapsed / 1e6,
                "messages": consumed, "body_bytes": body_bytes}
    finally:
        done.set()
        publisher._channel.queue_delete(queue)
        for sender in senders:
            sender.close()
        consumer.close()
