"""How pika's errors become fedmq's (part of common/amqp.py, the only code that uses pika).

A lost connection becomes `BrokerUnavailable` (the service edge reconnects); a refusal by the
broker (bad credentials, missing permission, conflicting declaration) becomes `BrokerRefused`
(retrying would not help).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pika.exceptions as pex

from common.errors import BrokerUnavailable, ConfigError, FedmqError

# access refused, not found, resource locked, precondition failed, not allowed
REFUSAL_CODES = {403, 404, 405, 406, 530}


class QueueMismatch(ConfigError):
    """A queue exists with other arguments than this fedmq declares, and is not empty."""


class BrokerRefused(FedmqError):
    """The broker refused an operation; `code` is the AMQP reply code (403 = ACCESS_REFUSED)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


@contextlib.contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except (pex.ChannelClosedByBroker, pex.ConnectionClosedByBroker) as exc:
        if exc.reply_code in REFUSAL_CODES:
            raise BrokerRefused(exc.reply_code, exc.reply_text) from None
        raise BrokerUnavailable(f"broker closed: {exc.reply_code} {exc.reply_text}") from None
    except (pex.ProbableAccessDeniedError, pex.ProbableAuthenticationError) as exc:
        raise BrokerRefused(403, str(exc) or type(exc).__name__) from None
    except pex.AMQPConnectionError as exc:  # its text is empty; the reason is its argument
        raise BrokerUnavailable(f"cannot connect: {exc.args[0] if exc.args else exc!r}") from None
    except (pex.AMQPError, OSError) as exc:
        raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from None


class _NotFoundFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in ("NOT_FOUND", "exclusive use"))


@contextlib.contextmanager
def quiet_not_found() -> Iterator[None]:
    """pika logs every channel the broker closes; a failed existence check (or claim) is no
    news."""
    channel_log, quiet = logging.getLogger("pika.channel"), _NotFoundFilter()
    channel_log.addFilter(quiet)
    try:
        yield
    finally:
        channel_log.removeFilter(quiet)
