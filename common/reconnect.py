"""The service edge: run a broker session again after its connection is lost.

common/amqp.py turns every lost connection into `BrokerUnavailable`; a service runs its session
through `run_with_reconnect`, which opens a fresh one after a backoff. A refusal by the broker
(`BrokerRefused`) is not retried: it reaches the caller.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from common.errors import BrokerUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_with_reconnect(session: Callable[[], T], stop: threading.Event, *,
                       initial_delay: float = 0.5, max_delay: float = 30.0) -> T | None:
    """Run `session` until it returns; after BrokerUnavailable, wait and run it again.

    The wait is capped exponential backoff with full jitter; it restarts from `initial_delay`
    once a session has stayed up longer than `max_delay` (tenacity cannot reset a backoff, which
    a service that runs for days needs). Returns None if `stop` is set while waiting.
    """
    attempt = 0
    while True:
        started = time.monotonic()
        try:
            return session()
        except BrokerUnavailable as exc:
            if stop.is_set():
                return None
            attempt = 0 if time.monotonic() - started > max_delay else attempt + 1
            delay = random.uniform(0, min(max_delay, initial_delay * 2 ** attempt))
            log.warning("broker unavailable (%s); reconnecting in %.1fs", exc, delay)
            if stop.wait(delay):
                return None
