"""Simulated workers: the real worker protocol without TensorFlow, many in one process.

Each simulated worker has its own channel (prefetch 1 on the tasks queue, its own direct
reply-to consumer); `--per-connection` workers share one AMQP connection, served by one thread
(the broker here allows about 800 sockets, so 1,000 workers cannot each have a connection).
A worker takes a task; if the model it holds is older than the task's `min_version` it asks
for the model through the real `ModelSource` request path (as a real worker does: asking again
after 5 s, using what it holds after 10 s); after `--delay` seconds ("training") it answers with
the model it holds plus a small fixed perturbation (a delta or whole weights, as the task asks),
encoded by the real codec, publishes it to the inbox with a publisher confirm (in chunks of
`--chunk-bytes` when it is larger, as a real worker does), and only then acks the task. Unlike
a real worker it asks for no model before its first task: a fleet of 1,000 would otherwise
fetch 1,000 models at start.

Decoded models are shared across the process by version (the broker still delivers one body per
request: that traffic is what the bench measures). On SIGTERM the process writes `--report`:
the update ids whose publish was confirmed, with their publish times, and the time each version
was announced (from the job's `version` events).

`python -m bench.sim_fleet --job J --workers N --size 4mb --report out.json`
"""

from __future__ import annotations

import heapq
import json
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import click
import numpy as np

from bench import command, scale_model
from common import chunks, models, wire
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.connection import await_declared
from common.errors import DecodeError, FedmqError
from common.messages import Event, GlobalModel, TrainTask, WeightUpdate, new_id
from common.topology import REPLY_TO, UPDATE_KEY, Topology
from worker.model_source import FRESH_MODEL_WAIT_SECONDS, MODEL_REQUEST_RETRY_SECONDS, ModelSource


class Fleet:
    """What the simulated workers of one process share: settings, decoded models, the record."""

    def __init__(self, job: str, size: str, delay: float, max_bytes: int,
                 chunk_bytes: int = 4 * 1024 * 1024) -> None:
        self.topology = Topology(job)
        self.codec = Codec(max_bytes)
        self.delay = delay
        self.chunk_bytes = chunk_bytes
        template = [np.zeros(shape, np.float32) for shape in scale_model.shapes(size)]
        self.fingerprint = models.fingerprint(template)
        rng = np.random.default_rng(0)
        self.noise = tuple(rng.normal(0, 1e-4, w.shape).astype(np.float32) for w in template)
        self.lock = threading.Lock()
        self.models: dict[int, GlobalModel] = {}
        self.confirmed: list[tuple[str, float]] = []
        self.fetches = 0
        self.stop = threading.Event()

    def intern(self, model: GlobalModel) -> GlobalModel:
        """One decoded copy per version (the newest two kept) for the whole process."""
        with self.lock:
            held = self.models.setdefault(model.version, model)
            for old in sorted(self.models)[:-2]:
                del self.models[old]
            return held


class SimWorker:
    """One simulated worker on its own channel."""

    def __init__(self, worker_id: str, broker: Broker, fleet: Fleet, due: list[Any]) -> None:
        self.fleet, self.broker, self.due = fleet, broker, due
        self.source = ModelSource(worker_id, fleet.topology, fleet.codec, None,
                                  fleet.fingerprint, max_body_bytes=fleet.codec.max_bytes)
        self.task: tuple[Delivery, TrainTask] | None = None
        self.asked_at = 0.0
        self.waiting_since = 0.0
        self.scheduled = False

    def start(self) -> None:
        self.broker.consume(REPLY_TO, self._on_reply, auto_ack=True)
        self.broker.consume(self.fleet.topology.tasks, self._on_task, prefetch=1)

    def _on_task(self, delivery: Delivery) -> None:
        try:
            task = self.fleet.codec.decode(delivery.body, TrainTask).message
        except DecodeError:
            self.broker.reject(delivery, requeue=False)
            return
        self.task, self.scheduled = (delivery, task), False
        self.waiting_since = time.monotonic()
        if self._fresh_enough():
            self._schedule()
        else:
            self._ask()

    def _fresh_enough(self) -> bool:
        held, task = self.source.latest, self.task
        return held is not None and task is not None and held.version >= task[1].min_version

    def _ask(self) -> None:
        self.asked_at = time.monotonic()
        with self.fleet.lock:
            self.fleet.fetches += 1
        self.source.request(self.broker)

    def _on_reply(self, delivery: Delivery) -> None:
        self.source.on_reply(delivery)
        if self.source.latest is not None:
            self.source.latest = self.fleet.intern(self.source.latest)
        if self.task is not None and not self.scheduled and self._fresh_enough():
            self._schedule()

    def _schedule(self) -> None:
        self.scheduled = True
        heapq.heappush(self.due, (time.monotonic() + self.fleet.delay, id(self), self))

    def tick(self, now: float) -> None:
        """Ask again, or give up waiting for a fresher model, as the real worker does."""
        if self.task is None or self.scheduled:
            return
        receiving = now - self.source.last_chunk_at < MODEL_REQUEST_RETRY_SECONDS
        if self.source.latest is not None and now - self.waiting_since > FRESH_MODEL_WAIT_SECONDS:
            self._schedule()
        elif now - self.asked_at > MODEL_REQUEST_RETRY_SECONDS and not receiving:
            self._ask()  # as ModelSource.for_task: never while a chunked reply is arriving

    def answer(self) -> None:
        assert self.task is not None and self.source.latest is not None
        (delivery, task), model = self.task, self.source.latest
        noise = self.fleet.noise
        weights = noise if task.send_delta else tuple(
            w + n for w, n in zip(model.weights, noise, strict=True))
        update = WeightUpdate(update_id=new_id(), worker_id=self.source.worker_id,
                              task_id=task.task_id, base_version=model.version, num_examples=100,
                              train_seconds=self.fleet.delay, weights=weights,
                              is_delta=task.send_delta)
        body = self.fleet.codec.encode(update)
        sent_at = time.time()
        chunks.publish(partial(self.broker.publish, self.fleet.topology.inbox, UPDATE_KEY),
                       body, self.fleet.chunk_bytes)
        del body
        self.broker.ack(delivery)
        self.task = None
        with self.fleet.lock:
            self.fleet.confirmed.append((update.update_id, sent_at))


def serve_connection(url: str, fleet: Fleet, name: str, worker_ids: list[str]) -> None:
    """One thread: one connection, one channel per simulated worker, until the fleet stops."""
    broker = Broker(url, name=name)
    try:
        await_declared(broker, fleet.stop, [fleet.topology.tasks],
                              [fleet.topology.inbox, fleet.topology.model])
        due: list[Any] = []
        channels = [broker] + [broker.open_channel() for _ in worker_ids[1:]]
        workers = [SimWorker(wid, ch, fleet, due) for wid, ch in zip(worker_ids, channels,
                                                                      strict=True)]
        for worker in workers:
            worker.start()
        while not fleet.stop.is_set():
            broker.process(0.02)
            now = time.monotonic()
            while due and due[0][0] <= now:
                heapq.heappop(due)[2].answer()
            for worker in workers:
                worker.tick(now)
    except FedmqError as exc:
        if not fleet.stop.is_set():
            print(f"{name}: {exc}", flush=True)
    finally:
        broker.close()


def watch_versions(url: str, fleet: Fleet, job: str, seen: dict[int, float]) -> None:
    """The announce time of every version (the job's `version` events)."""
    broker = Broker(url, name=f"fedmq-bench-{job}-events")
    try:
        await_declared(broker, fleet.stop, [], [fleet.topology.events])
        queue = broker.private_queue(fleet.topology.events, "version")

        def on_event(delivery: Delivery) -> None:
            event = wire.decode(delivery.body, Event)
            seen[int(event.fields["version"] or 0)] = event.at

        broker.consume(queue, on_event, auto_ack=True, prefetch=0)
        while not fleet.stop.is_set():
            broker.process(0.1)
    except FedmqError as exc:
        print(f"events: {exc}", flush=True)
    finally:
        broker.close()


@click.command(context_settings=command.CONTEXT)
@click.option("--job", required=True)
@click.option("--workers", default=10, show_default=True)
@click.option("--per-connection", default=1, show_default=True, help="Workers per connection.")
@click.option("--size", default="20kb", type=click.Choice(sorted(scale_model.HIDDEN)))
@click.option("--delay", default=0.0, show_default=True, help="Seconds of 'training' per task.")
@click.option("--max-body-bytes", default=2 * 1024 ** 3, show_default=True,
              help="Largest whole model accepted (it may come in chunks).")
@click.option("--chunk-bytes", default=4 * 1024 * 1024, show_default=True,
              help="Updates larger than this are sent in chunks of this size.")
@click.option("--report", type=click.Path(path_type=Path), required=True)
@click.option("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F", show_default=True)
def main(job: str, workers: int, per_connection: int, size: str, delay: float,
         max_body_bytes: int, chunk_bytes: int, report: Path, amqp_url: str) -> None:
    """Run simulated workers until SIGTERM, then write the report."""
    fleet = Fleet(job, size, delay, max_body_bytes, chunk_bytes)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: fleet.stop.set())
    ids = [f"sim-{index:04d}" for index in range(workers)]
    versions: dict[int, float] = {}
    threads = [threading.Thread(target=watch_versions, args=(amqp_url, fleet, job, versions))]
    for index, start in enumerate(range(0, workers, per_connection)):
        threads.append(threading.Thread(target=serve_connection, args=(
            amqp_url, fleet, f"fedmq-sim-{job}-{index:04d}",
            ids[start:start + per_connection])))
    for thread in threads:
        thread.start()
    while not fleet.stop.is_set():
        fleet.stop.wait(0.5)
    for thread in threads:
        thread.join(30)
    report.write_text(json.dumps({"confirmed": fleet.confirmed, "fetches": fleet.fetches,
                                  "versions": dict(versions)}))


if __name__ == "__main__":
    main()
