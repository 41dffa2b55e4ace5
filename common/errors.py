"""The project's own exceptions: callers catch these, never library errors."""


class FedmqError(Exception):
    """Base class of every fedmq error."""


class DecodeError(FedmqError):
    """A message body could not be turned into a valid message (or, sealed, must not be
    trusted); `reason` says why, `code` labels it for metrics, and `task_id` is the task its
    clear header names, when it got that far."""

    code = "decode_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.task_id: str | None = None


class RejectedUpdate(FedmqError):
    """A decodable update that must not be applied; `code` is a short label for metrics
    (stale, non_finite, shape_mismatch, ...), `reason` the sentence for logs and dead letters."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.reason = f"{code}: {detail}"


class ConfigError(FedmqError):
    """A setting, model spec or dataset name that cannot be used."""


class BrokerUnavailable(FedmqError):
    """The broker connection was lost or could not be opened; the service edge reconnects."""
