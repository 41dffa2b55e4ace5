"""Helpers for integration tests: real fedmq processes, waiting on conditions, broker access."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from common import chunks, wire
from common.amqp import Broker, Delivery
from common.messages import GlobalModel, ModelRequest, new_id
from common.topology import Topology

T = TypeVar("T")
AMQP_URL = os.environ.get("FEDMQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
MANAGEMENT_URL = os.environ.get("FEDMQ_TEST_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.2) -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class Proc:
    role: str
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Processes:
    """Starts `fedmq <role>` processes configured by FEDMQ_* env vars; stops them at teardown."""

    workdir: Path
    base_env: dict[str, str]
    started: list[Proc] = field(default_factory=list)

    def start(self, role: str, name: str | None = None, **settings: Any) -> Proc:
        name = name or f"{role}-{len(self.started)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FEDMQ_")}
        env |= self.base_env | {f"FEDMQ_{k.upper()}": str(v) for k, v in settings.items()}
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as output:
            process = subprocess.Popen([sys.executable, "-m", "fedmq", role], env=env,
                                       stdout=output, stderr=subprocess.STDOUT)
        proc = Proc(role, name, process, log_path)
        self.started.append(proc)
        return proc

    def wait(self, proc: Proc, timeout: float) -> int:
        try:
            return proc.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{proc.name} still running after {timeout}s:\n"
                                 f"{proc.log()[-4000:]}") from None

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.alive():
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.process.wait(30)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.log()[-6000:]}" for p in self.started)


def keys_cli(*args: str) -> str:
    """`fedmq keys ARGS` as an operator runs it; its output."""
    result = subprocess.run([sys.executable, "-m", "fedmq", "keys", *args],
                            capture_output=True, text=True, check=True)
    return result.stdout


def sealed_keys(keys: Path, workers: Sequence[str]) -> Path:
    """Identities in `keys` for the coordinator and `workers`, the workers registered in
    `keys`/reg.json, as an operator makes them with `fedmq keys`; returns `keys`."""
    for name in ("coordinator", *workers):
        keys_cli("generate", name, "--dir", str(keys))
    for name in workers:
        keys_cli("register", str(keys / f"{name}.pub"), "--registry", str(keys / "reg.json"))
    return keys


def read_summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))


def fetch_model(broker: Broker, topology: Topology, timeout: float = 10.0) -> GlobalModel:
    """Ask the running coordinator for its current model, as a late worker does."""
    replies: list[GlobalModel] = []
    joiner = chunks.Reassembler(chunks.MemoryStore(), max_body_bytes=2**40, max_partials=4,
                                expiry_seconds=timeout)

    def on_reply(delivery: Delivery) -> None:
        body: bytes | bytearray | None = delivery.body
        if chunks.is_chunk(delivery.headers):  # a model larger than the coordinator's chunks
            body = joiner.add(chunks.parse(delivery.headers), delivery.body).body
        if body is not None:
            replies.append(wire.decode(body, GlobalModel))

    tag = broker.consume("amq.rabbitmq.reply-to", on_reply, auto_ack=True)
    broker.publish("", topology.model_requests, wire.encode(ModelRequest(worker_id="test")),
                   reply_to="amq.rabbitmq.reply-to", correlation_id=new_id(), persistent=False)
    deadline = time.monotonic() + timeout
    while not replies and time.monotonic() < deadline:
        broker.process(0.1)
    broker.cancel(tag)
    assert replies, "coordinator did not answer a model request"
    return replies[0]


def drain(broker: Broker, queue: str) -> list[Delivery]:
    """Take every message currently in `queue` (acking them)."""
    taken = []
    while (delivery := broker.get(queue)) is not None:
        broker.ack(delivery)
        taken.append(delivery)
    return taken
