"""A worker's default name tells replicas apart, also when they share the host's network."""

from __future__ import annotations

from worker.naming import default_worker_id


def test_a_process_is_named_by_its_host_and_pid() -> None:
    assert default_worker_id("vm", 4242) == "vm-4242"


def test_container_replicas_on_the_host_network_get_distinct_names() -> None:
    # Given four replicas, each the pid 1 of its container, all with the host's name
    names = {default_worker_id("vm", 1) for _ in range(4)}
    # Then each has a name of its own (the connection names in the management UI differ)
    assert len(names) == 4 and all(name.startswith("vm-") for name in names)
