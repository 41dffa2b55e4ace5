"""Queue and exchange names and their declarations: what users see in the management UI.

Names are a contract (shared/DESIGN.md): `fedmq.tasks`, `fedmq.updates`, `fedmq.model`,
`fedmq.events`, `fedmq.dead`; with a job id they become `fedmq.<job>.tasks` and so on.

In a cluster (docs/deploy.md) every queue that holds messages is a quorum queue, replicated on
`QueueLimits.replicas` nodes, so the loss of a minority of nodes loses nothing. The locks (the
job's control queue, the shard leases) cannot be: a lock is an exclusive consumer, and RabbitMQ
3.10 does not enforce exclusive consumers on quorum queues (a second one on another node was
accepted, tests/integration/test_cluster.py). They are transient classic queues instead, which
hold nothing: when their node is lost the broker deletes them and cancels their holders, the
coordinator declares them again on the node it reconnects to, and the holders take them again.
A durable classic queue would be worse: it stays, unusable, until its node comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TASK_DELIVERY_LIMIT = 5      # a task that kills its worker this often goes to fedmq.dead
# Updates are never dead-lettered by the broker (docs/reliability.md, "Crash loops"): a crash loop
# not caused by an update would otherwise send valid updates to fedmq.dead. RabbitMQ 4.x gives
# quorum queues a default limit of 20, so "no limit" is said as one that is never reached; the
# coordinator recognises a poison update itself (coordinator/poison.py).
UPDATE_DELIVERY_LIMIT = 1_000_000_000
MODEL_REQUEST_TTL_MS = 60_000
UPDATE_KEY = "update"                # routing key of updates on the inbox exchange
MODEL_REQUEST_KEY = "model.request"  # routing key of model requests on the inbox exchange
EVAL_REPORT_KEY = "eval.report"     # routing key of federated evaluation reports on the inbox
REPLY_TO = "amq.rabbitmq.reply-to"   # RabbitMQ's direct reply-to: where model requests are answered


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = True
    disposable: bool = False  # its messages may be dropped (model requests: workers ask again)


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str


@dataclass(frozen=True)
class QueueLimits:
    """Bounds on what a job leaves on the broker (docs/reliability.md, "Dead letters")."""

    dead_max_messages: int = 100_000
    dead_max_bytes: int = 256 * 1024 * 1024
    dead_ttl_ms: int = 7 * 24 * 3600 * 1000
    expires_ms: int = 7 * 24 * 3600 * 1000  # a queue nobody used for this long is deleted
    replicas: int | None = None  # x-quorum-initial-group-size; None: the broker's default


@dataclass(frozen=True)
class Topology:
    """Every name of one job; `queues()` etc. list what the coordinator declares at start."""

    job: str = ""
    limits: QueueLimits = field(default_factory=QueueLimits)
    secure: bool = False  # secure aggregation: the helper's request and answer queues too

    def _name(self, part: str) -> str:
        return f"fedmq.{self.job}.{part}" if self.job else f"fedmq.{part}"

    @property
    def tasks(self) -> str:
        return self._name("tasks")

    @property
    def updates(self) -> str:
        return self._name("updates")

    @property
    def model(self) -> str:
        """Fanout exchange: every new global version reaches every subscriber."""
        return self._name("model")

    @property
    def events(self) -> str:
        """Topic exchange: progress, metrics and rejections (routing key = event name)."""
        return self._name("events")

    @property
    def dead(self) -> str:
        return self._name("dead")

    @property
    def dead_letter_exchange(self) -> str:
        return self._name("dlx")

    @property
    def model_requests(self) -> str:
        """Late workers ask here for the current model; the reply goes to their reply_to."""
        return self._name("model.requests")

    @property
    def inbox(self) -> str:
        """Direct exchange: what workers send to the coordinator (updates, model requests).

        Workers publish here and nowhere else, so the broker can grant them write permission on
        this one exchange instead of the default exchange (which reaches every queue).
        """
        return self._name("inbox")

    @property
    def evaluations(self) -> str:
        """Fanout exchange: federated evaluation requests, to every worker's private queue."""
        return self._name("evaluations")

    @property
    def eval_reports(self) -> str:
        """The workers' evaluation reports (metrics only), consumed by the coordinator."""
        return self._name("eval.reports")

    def shard(self, index: int) -> str:
        """Shard lease `index`: an empty queue whose one exclusive consumer holds the shard."""
        return self._name(f"shards.{index}")

    @property
    def control(self) -> str:
        """The job's lock: an empty queue whose one exclusive consumer is its coordinator."""
        return self._name("coordinator")

    @property
    def helper_requests(self) -> str:
        """Secure aggregation: the helper consumes the coordinator's unmask requests here."""
        return self._name("helper.requests")

    @property
    def helper_answers(self) -> str:
        """Secure aggregation: the coordinator consumes the helper's mask sums here."""
        return self._name("coordinator.mask-sums")

    @property
    def helper_outbox(self) -> str:
        """Secure aggregation: fanout exchange the helper publishes its answers to, bound to
        `helper_answers` alone. The helper writes here and nowhere else, so its broker user
        needs no write permission on the default exchange (which reaches every queue)."""
        return self._name("helper.out")

    def helper_queues(self) -> list[QueueSpec]:
        expires = {"x-expires": self.limits.expires_ms}
        return [QueueSpec(self.helper_requests, {**self._quorum(), **expires}),
                QueueSpec(self.helper_answers, {**self._quorum(), **expires})]

    def lock_queue(self, name: str) -> QueueSpec:
        """A lease or lock queue: never holds a message; deleted when unused (x-expires), and
        transient, so that it goes with its node in a cluster (see the module doc)."""
        return QueueSpec(name, {"x-expires": self.limits.expires_ms}, durable=False)

    def _quorum(self) -> dict[str, Any]:
        replicas = self.limits.replicas
        return {"x-queue-type": "quorum",
                **({"x-quorum-initial-group-size": replicas} if replicas else {})}

    def exchanges(self) -> list[ExchangeSpec]:
        return [ExchangeSpec(self.model, "fanout"), ExchangeSpec(self.events, "topic"),
                ExchangeSpec(self.dead_letter_exchange, "fanout"),
                ExchangeSpec(self.inbox, "direct"), ExchangeSpec(self.evaluations, "fanout"),
                *([ExchangeSpec(self.helper_outbox, "fanout")] if self.secure else [])]

    def queues(self) -> list[QueueSpec]:
        dead_letter = {"x-dead-letter-exchange": self.dead_letter_exchange}
        expires = {"x-expires": self.limits.expires_ms}
        quorum = self._quorum()
        return [
            QueueSpec(self.tasks, {**quorum, **dead_letter, **expires,
                                   "x-delivery-limit": TASK_DELIVERY_LIMIT}),
            QueueSpec(self.updates, {**quorum, **dead_letter, **expires,
                                     "x-delivery-limit": UPDATE_DELIVERY_LIMIT,
                                     "x-single-active-consumer": True}),
            QueueSpec(self.model_requests, {**quorum, "x-message-ttl": MODEL_REQUEST_TTL_MS,
                                            **expires, "x-single-active-consumer": True},
                      disposable=True),
            QueueSpec(self.dead, {**quorum, "x-max-length": self.limits.dead_max_messages,
                                  "x-max-length-bytes": self.limits.dead_max_bytes,
                                  "x-overflow": "drop-head",
                                  "x-message-ttl": self.limits.dead_ttl_ms, **expires}),
            self.lock_queue(self.control),
            QueueSpec(self.eval_reports, {**quorum, **expires}, disposable=True),
            *(self.helper_queues() if self.secure else []),
        ]

    def bindings(self) -> list[tuple[str, str, str]]:
        """(exchange, queue, routing key) triples."""
        return [(self.dead_letter_exchange, self.dead, ""),
                (self.inbox, self.updates, UPDATE_KEY),
                (self.inbox, self.model_requests, MODEL_REQUEST_KEY),
                (self.inbox, self.eval_reports, EVAL_REPORT_KEY),
                *([(self.helper_outbox, self.helper_answers, "")] if self.secure else [])]

    def all_queue_names(self) -> list[str]:
        return [q.name for q in self.queues()]
