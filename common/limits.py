"""The message size limit: what may be sent at all, and the one message that says a body is too big.

Every body fedmq sends or accepts is at most `--max-message-bytes` (FEDMQ_MAX_MESSAGE_BYTES). The
broker has its own limit (`max_message_size`: 128 MiB by default on RabbitMQ 3.x, 16 MiB on 4.x)
and refuses anything over 512 MiB whatever its configuration. A model that cannot fit is found at
start by encoding it (coordinator: the model it broadcasts; worker: the update it would send), so a
job stops with this message instead of sending a model nobody can open, forever.
"""

from __future__ import annotations

from common.errors import ConfigError

MiB = 1024 * 1024
BROKER_HARD_LIMIT = 512 * MiB  # RabbitMQ refuses larger messages whatever max_message_size says


def too_large(what: str, size: int, limit: int) -> str:
    """The sentence for a body of `size` bytes over `limit`: the sizes and what to do."""
    return (f"{what} is {size} bytes encoded, which exceeds the message limit of {limit} bytes; "
            f"raise --max-message-bytes (FEDMQ_MAX_MESSAGE_BYTES) of the coordinator and every "
            f"worker to at least {size}, up to the broker's own max_message_size (RabbitMQ 3.x: "
            f"128 MiB by default, 4.x: 16 MiB; never above 512 MiB), or use a smaller model")


def check_fits(what: str, body: bytes, limit: int) -> None:
    """Raise ConfigError (with `too_large`'s message) if `body` is over `limit` bytes."""
    if len(body) > limit:
        raise ConfigError(too_large(what, len(body), limit))
