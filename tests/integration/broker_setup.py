"""The test session sets up the broker it needs (issue 16): the README's test command must pass on
a machine where RabbitMQ is installed but not running, or runs without its management plugin.

If nothing answers on the AMQP URL and the broker is local with `rabbitmq-server` installed, it is
started (`rabbitmq-server -detached`, `rabbitmqctl await_startup`); if the management API does not
answer and `rabbitmq-plugins` is installed, the plugin is enabled and the API awaited (bounded).
What cannot be had is a `SetupFailed` with a one-line instruction: the session fails, never skips.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from common.amqp import Broker
from common.errors import FedmqError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MANAGEMENT_WAIT_SECONDS = 60.0
Runner = Callable[[Sequence[str]], None]


class SetupFailed(Exception):
    """The broker or its management API cannot be had; the message says what to do."""


def run_command(command: Sequence[str]) -> None:
    """Run a RabbitMQ tool (Debian's wrappers switch to the rabbitmq user themselves)."""
    subprocess.run(list(command), check=True, timeout=180, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


@dataclass(frozen=True)
class Tools:
    """The RabbitMQ scripts, and the node they act on (None: the machine's default node)."""

    server: str | None
    ctl: str | None
    plugins: str | None
    node: str | None = None

    @classmethod
    def installed(cls) -> Tools:
        return cls(shutil.which("rabbitmq-server"), shutil.which("rabbitmqctl"),
                   shutil.which("rabbitmq-plugins"))

    def on_node(self, tool: str) -> list[str]:
        return [tool] + (["-n", self.node] if self.node else [])


def is_local(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


def amqp_problem(url: str) -> str | None:
    try:
        Broker(url, name="fedmq-test-probe").close()
    except FedmqError as exc:
        return str(exc) or type(exc).__name__
    return None


def management_problem(url: str) -> str | None:
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
    try:
        requests.get(f"{base}/api/overview", auth=(parts.username or "guest",
                                                   parts.password or "guest"),
                     timeout=5).raise_for_status()
    except requests.RequestException as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def ensure_broker(url: str, tools: Tools, run: Runner = run_command) -> None:
    """Make the broker at `url` answer, starting the local one if it is installed."""
    problem = amqp_problem(url)
    if problem is None:
        return
    if not is_local(url) or tools.server is None or tools.ctl is None:
        raise SetupFailed(f"RabbitMQ is required at {url} and does not answer ({problem}): "
                          f"install and start it (apt-get install rabbitmq-server), or set "
                          f"FEDMQ_TEST_AMQP_URL to a running broker")
    try:
        run([tools.server, "-detached"])
        deadline = time.monotonic() + 120
        while True:  # await_startup fails at once while the detached node has not registered
            try:
                run(tools.on_node(tools.ctl) + ["await_startup", "--timeout", "120"])
                break
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    except (subprocess.SubprocessError, OSError) as exc:
        raise SetupFailed(f"RabbitMQ at {url} does not answer and `rabbitmq-server -detached` "
                          f"did not start it ({exc}): start it yourself (rabbitmq-server "
                          f"-detached)") from None
    problem = amqp_problem(url)
    if problem is not None:
        raise SetupFailed(f"RabbitMQ was started but {url} still does not answer ({problem}): "
                          f"check its listeners and the guest user")


def ensure_management(url: str, tools: Tools, run: Runner = run_command,
                      wait: float = MANAGEMENT_WAIT_SECONDS) -> None:
    """Make the management API at `url` answer, enabling the local broker's plugin if needed."""
    problem = management_problem(url)
    if problem is None:
        return
    instruction = ("enable it: rabbitmq-plugins enable rabbitmq_management (or set "
                   "FEDMQ_TEST_MANAGEMENT_URL)")
    if not is_local(url) or tools.plugins is None:
        raise SetupFailed(f"RabbitMQ management API is required at {url} ({problem}): "
                          f"{instruction}")
    try:
        run(tools.on_node(tools.plugins) + ["enable", "rabbitmq_management"])
    except (subprocess.SubprocessError, OSError) as exc:
        raise SetupFailed(f"RabbitMQ management API is required at {url} and enabling the "
                          f"plugin failed ({exc}): {instruction}") from None
    deadline = time.monotonic() + wait
    while (problem := management_problem(url)) is not None:
        if time.monotonic() > deadline:
            raise SetupFailed(f"RabbitMQ management API still does not answer at {url} "
                              f"{wait:.0f}s after enabling the plugin ({problem}): {instruction}")
        time.sleep(0.5)
