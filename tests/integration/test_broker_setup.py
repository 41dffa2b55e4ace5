"""The test session sets up its broker (issue 16), checked on a private node so the machine's
shared broker is never stopped and its plugins never touched: a node without the management
plugin gets it enabled; a stopped node is started; what cannot be had is a one-line failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.broker_setup import (
    SetupFailed,
    Tools,
    amqp_problem,
    ensure_broker,
    ensure_management,
    management_problem,
)
from tests.integration.private_node import CTL, PLUGINS, SERVER, PrivateNode

pytestmark = pytest.mark.integration


@pytest.fixture
def bare_node() -> Iterator[PrivateNode]:
    """A private node on its own ports, started without the management plugin."""
    node = PrivateNode(name="fedmqsetup", amqp_port=5686, management_port=15686,
                       management=False)
    node.start()
    yield node
    node.destroy()


def test_the_session_enables_the_management_plugin_and_starts_a_stopped_broker(
        bare_node: PrivateNode) -> None:
    tools = Tools(SERVER, CTL, PLUGINS, node=bare_node.node)
    # Given a running broker whose management API does not answer
    assert amqp_problem(bare_node.url) is None
    assert management_problem(bare_node.management_url) is not None

    # When the session sets up the management API, it answers
    ensure_management(bare_node.management_url, tools, run=bare_node.run_tool)
    assert management_problem(bare_node.management_url) is None

    # And when the broker is stopped, the session starts it again
    bare_node.stop()
    assert amqp_problem(bare_node.url) is not None
    ensure_broker(bare_node.url, tools, run=bare_node.run_tool)
    assert amqp_problem(bare_node.url) is None


def test_what_cannot_be_had_is_a_one_line_instruction() -> None:
    no_tools = Tools(None, None, None)
    with pytest.raises(SetupFailed) as broker:
        ensure_broker("amqp://guest:guest@127.0.0.1:5699/%2F", no_tools)
    with pytest.raises(SetupFailed) as management:
        ensure_management("http://guest:guest@127.0.0.1:15699", no_tools)
    for failure in (broker, management):
        assert "\n" not in str(failure.value)
    assert "rabbitmq-server" in str(broker.value)
    assert "rabbitmq-plugins enable rabbitmq_management" in str(management.value)
