"""remove_job's order of work with a broker that refuses one delete: the refusal closes the
channel, so the rest is deleted on a fresh connection and the refused name is reported (the real
broker: tests/integration/test_job_removal.py)."""

from __future__ import annotations

import pytest

from common import job_removal
from common.amqp_errors import BrokerRefused
from common.errors import BrokerUnavailable
from common.topology import Topology

TOPOLOGY = Topology(job="j", secure=True)
REFUSED = TOPOLOGY.all_queue_names()[1]


class Refusing:
    """A Broker whose channel closes for good after it refuses REFUSED."""

    deleted: list[str] = []
    connections = 0

    def __init__(self, url: str, name: str) -> None:
        Refusing.connections += 1
        self.open = True

    def exists(self, name: str, kind: str = "queue") -> bool:
        return False  # no shard leases

    def delete(self, name: str, kind: str = "queue") -> None:
        if not self.open:
            raise BrokerUnavailable("channel closed")
        if name == REFUSED:
            self.open = False
            raise BrokerRefused(403, f"ACCESS_REFUSED to {name}")
        Refusing.deleted.append(name)

    def close(self) -> None:
        self.open = False


def test_a_refused_delete_does_not_stop_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_removal, "Broker", Refusing)
    Refusing.deleted, Refusing.connections = [], 0
    failed = job_removal.remove_job("amqp://", TOPOLOGY)
    every = TOPOLOGY.all_queue_names() + [e.name for e in TOPOLOGY.exchanges()]
    assert failed == [REFUSED]
    assert Refusing.deleted == [name for name in every if name != REFUSED]
    assert Refusing.connections == 2
