"""The coordinator's side of the helper conversation (secure aggregation, issue 13).

A sealed buffer (strategies/secure_fedbuff.py) is in the checkpoint before the helper is asked
for its mask sum: the checkpoint is written on the commit's writer thread, so `ask` asks only for
the buffers a checkpoint on disk holds (`saved` names them). A coordinator that dies after asking
therefore asks again for the same buffer id with the same members, and the helper answers it
again (its rules refuse anything else). The request goes to the helper's queue, sealed to the
helper; the answer comes back on the coordinator's own queue, signed by the helper and sealed to
the coordinator, and is acked only once the step it made is checkpointed (commit.py). A buffer
not answered within --helper-timeout is asked for again (the helper may have been down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from common import faults
from common.amqp import Broker, Delivery
from common.codec import Codec
from common.errors import ConfigError, DecodeError
from common.identity import load_public
from common.messages import UnmaskAnswer, UnmaskRequest
from common.settings import CoordinatorSettings
from common.topology import Topology
from coordinator.commit import Commit
from coordinator.core import CoordinatorCore
from coordinator.strategies.secure_fedbuff import SealedBuffer, SecureFedBuff

log = logging.getLogger("fedmq.coordinator")
ANSWER_ENVELOPE = 64 * 1024  # generous: the answer's header, signature and sealing


def unmask_request(sealed: SealedBuffer, job: str, coordinates: int) -> UnmaskRequest:
    """What the helper is asked about a sealed buffer: its members' weights and sealed seeds."""
    return UnmaskRequest(buffer_id=sealed.buffer_id, job=job, coordinates=coordinates,
                         weights=dict(sealed.members), seeds=dict(sealed.seeds))


class SecureLink:
    """Asks the helper for sealed buffers' mask sums and applies the answers."""

    def __init__(self, settings: CoordinatorSettings, topology: Topology, codec: Codec,
                 core: CoordinatorCore, commit: Commit,
                 version_made: Callable[[int | None, str], None]) -> None:
        assert settings.helper_key is not None and isinstance(core.strategy, SecureFedBuff)
        self.helper = load_public(settings.helper_key)
        self.topology, self.codec, self.core, self.commit = topology, codec, core, commit
        self.strategy: SecureFedBuff = core.strategy
        self.version_made, self.timeout = version_made, settings.helper_timeout
        self.asked: dict[str, float] = {}  # buffer id -> when this process last asked
        coordinates = sum(int(w.size) for w in core.weights)
        if 4 * coordinates + ANSWER_ENVELOPE > settings.max_message_bytes:
            raise ConfigError(
                f"secure aggregation: the helper's mask sum for this model is one message of "
                f"{4 * coordinates + ANSWER_ENVELOPE} bytes (4 per parameter), over "
                f"--max-message-bytes {settings.max_message_bytes}: raise it (and the broker's "
                f"max_message_size) or use a smaller model (mask sums are not sent in chunks)")
        self.checkpointed = settings.checkpoint
        self.durable: set[str] = set()  # sealed buffers a checkpoint on disk holds

    def sealed_ids(self) -> frozenset[str]:
        """The buffers sealed now (captured with a checkpoint; `saved` once it is on disk)."""
        return frozenset(sealed.buffer_id for sealed in self.strategy.sealed)

    def saved(self, buffer_ids: frozenset[str]) -> None:
        """A checkpoint holding these sealed buffers is on disk: they may be asked for."""
        self.durable |= buffer_ids

    def start(self, broker: Broker) -> None:
        """A new connection: consume the answers, and ask for every sealed buffer again."""
        self.asked = {}
        broker.consume(self.topology.helper_answers, lambda d: self.on_answer(broker, d),
                       prefetch=4)

    def waiting(self) -> bool:
        return self.strategy.stepping

    def ask(self, broker: Broker) -> None:
        """Ask for each sealed buffer not asked (or not answered within the timeout) that a
        checkpoint on disk holds."""
        now = time.monotonic()
        size = sum(int(w.size) for w in self.core.weights)
        for sealed in self.strategy.sealed:
            if self.checkpointed and sealed.buffer_id not in self.durable:
                continue
            if now - self.asked.get(sealed.buffer_id, -self.timeout) < self.timeout:
                continue
            broker.publish("", self.topology.helper_requests, self.codec.encode(
                unmask_request(sealed, self.core.job, size),
                {self.helper.name: self.helper.encryption}))
            self.asked[sealed.buffer_id] = now
            faults.after_helper_asked()
            log.info("asked the helper for buffer %s (%d updates)", sealed.buffer_id[:8],
                     len(sealed.members))

    def on_answer(self, broker: Broker, delivery: Delivery) -> None:
        try:
            answer = self.codec.decode(delivery.body, UnmaskAnswer,
                                       {self.helper.name: self.helper.signing}).message
            self.apply(answer)
        except (DecodeError, ValueError) as exc:
            log.error("ignored an answer that is not the helper's or not well formed: %s", exc)
        self.commit.ack(broker, delivery)

    def apply(self, answer: UnmaskAnswer) -> None:
        """Apply (or drop, if refused) the buffer an answer is about."""
        self.asked.pop(answer.buffer_id, None)
        if not answer.answered:
            lost = self.strategy.refuse(answer.buffer_id)
            if answer.code == "below_k_min" and lost >= self.strategy.buffer_size:
                raise ConfigError(f"the helper refuses full buffers ({answer.reason}): set "
                                  f"--buffer-size to at least the helper's --k-min")
            if answer.code == "bad_weight":
                raise ConfigError(f"the helper refuses this coordinator's weights "
                                  f"({answer.reason}): set --secure-weight-resolution to at "
                                  f"most the helper's --max-weight")
            if lost:
                log.error("the helper refused buffer %s (%s: %s); its %d updates are lost",
                          answer.buffer_id[:8], answer.code, answer.reason, lost)
                self.commit.changed()
            return
        result = self.strategy.complete(self.core.weights, answer.buffer_id, answer.mask_sum)
        if result is None:
            log.info("answer for buffer %s again (applied before); ignored", answer.buffer_id[:8])
            return
        self.core.adopt(*result)
        self.version_made(None, "")
