"""`fedmq helper`: the second aggregator of secure aggregation, run by another party.

It consumes the coordinator's unmask requests (its own queue), opens each member's mask seed
(sealed to it and signed by a registered worker, bound to the update id the request names), lets
its rules decide (decisions.py: K_min, no update in two buffers, the same answer for the same
buffer; journaled before any answer leaves), and answers sum w_i r_i mod 2^32 through its own
exchange (`helper.out`, bound to the coordinator's queue alone), signed and sealed to the
coordinator. A request is acked only after its answer is confirmed by the broker, so a helper
killed mid-request answers it after a restart.
It never receives anything derived from an update: only seeds, weights and ids.
"""

from __future__ import annotations

import logging
import signal
import threading

from common import masking, sealed_wire
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.connection import await_declared, connect
from common.errors import ConfigError, DecodeError
from common.identity import Registry, load_identity, load_public
from common.messages import MaskSeed, UnmaskAnswer, UnmaskRequest
from common.reconnect import run_with_reconnect
from common.topology import Topology
from helper.decisions import HelperBook
from helper.journal import Journal
from helper.settings import HelperRoleSettings

log = logging.getLogger("fedmq.helper")


class SeedProblem(Exception):
    """A member's seed cannot be trusted: the buffer is refused, nothing journaled."""


class HelperService:
    """One helper process; `run()` blocks until SIGTERM/SIGINT."""

    def __init__(self, settings: HelperRoleSettings) -> None:
        if not (settings.identity and settings.registry and settings.coordinator_key):
            raise ConfigError("the helper needs --identity, --registry and --coordinator-key")
        self.settings = settings
        self.topology = Topology(settings.job, secure=True)
        self.identity = load_identity(settings.identity)
        self.codec = Codec(settings.max_body_bytes, self.identity)
        self.coordinator = load_public(settings.coordinator_key)
        self.book = HelperBook(Journal(settings.state_dir / "helper.journal"), settings.k_min,
                               settings.max_weight)
        self.stop = threading.Event()
        self.answered = 0
        log.info("helper %s: %d buffers in its journal", self.identity.name,
                 len(self.book.answered))

    def run(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop.set())
        run_with_reconnect(self._session, self.stop)
        log.info("helper stopped after answering %d requests", self.answered)

    def _session(self) -> None:
        broker = connect(self.settings, "fedmq-helper")
        try:
            # the coordinator owns the topology (with its queue settings: replicas, expiry); a
            # helper that declared them with its own defaults would be refused by a mismatch
            queues = [queue.name for queue in self.topology.helper_queues()]
            if not await_declared(broker, self.stop, queues, [self.topology.helper_outbox]):
                return
            broker.consume(self.topology.helper_requests, lambda d: self._on_request(broker, d),
                           prefetch=1)
            while not self.stop.is_set():
                broker.process(0.25)
        finally:
            broker.close()

    def _on_request(self, broker: Broker, delivery: Delivery) -> None:
        try:
            request = self.codec.decode(delivery.body, UnmaskRequest, {
                self.coordinator.name: self.coordinator.signing}).message
        except DecodeError as exc:
            log.warning("dropped a request that is not the coordinator's: %s", exc.reason)
            broker.reject(delivery, requeue=False)
            return
        answer = self.answer(request)
        broker.publish(self.topology.helper_outbox, "", self.codec.encode(
            answer, {self.coordinator.name: self.coordinator.encryption}))
        broker.ack(delivery)  # after the answer's confirm (publish waits for it)
        self.answered += 1

    def answer(self, request: UnmaskRequest) -> UnmaskAnswer:
        """The answer to one request: the mask sum, or a refusal with its reason."""
        try:
            seeds = self._open_seeds(request)
        except SeedProblem as exc:
            log.warning("refused buffer %s: %s", request.buffer_id[:8], exc)
            return UnmaskAnswer(request.buffer_id, False, "bad_seed", str(exc))
        decision = self.book.decide(request.buffer_id, list(request.weights.items()))
        if not decision.answer:
            log.warning("refused buffer %s: %s", request.buffer_id[:8], decision.reason)
            return UnmaskAnswer(request.buffer_id, False, decision.code, decision.reason)
        mask_sum = masking.weighted_mask_sum([seeds[u] for u in request.weights],
                                             list(request.weights.values()),
                                             [(request.coordinates,)])
        log.info("%s buffer %s (%d updates)", "answered again" if decision.again else "answered",
                 request.buffer_id[:8], len(request.weights))
        return UnmaskAnswer(request.buffer_id, True, mask_sum=tuple(mask_sum))

    def _open_seeds(self, request: UnmaskRequest) -> dict[str, bytes]:
        if request.job != self.settings.job or set(request.seeds) != set(request.weights):
            raise SeedProblem("the request is for another job, or its seeds and weights differ")
        if not 0 < request.coordinates <= self.settings.max_body_bytes // 4:
            raise SeedProblem(f"{request.coordinates} coordinates is out of range")
        assert self.settings.registry is not None
        trusted = {name: key.signing
                   for name, key in Registry.load(self.settings.registry).workers.items()}
        seeds = {}
        for update_id, body in request.seeds.items():
            try:
                seed, seal = sealed_wire.decode_sealed(body, MaskSeed, trusted=trusted,
                                                       me=self.identity)
            except DecodeError as exc:
                raise SeedProblem(f"seed of update {update_id}: {exc.reason}") from None
            if seed.update_id != update_id or seed.worker_id != seal.signer or \
                    seed.job != self.settings.job or len(seed.seed) != masking.SEED_BYTES:
                raise SeedProblem(f"the seed named {update_id} belongs to another update, "
                                  f"worker or job")
            seeds[update_id] = seed.seed
        return seeds
