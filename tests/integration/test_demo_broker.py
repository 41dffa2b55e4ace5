"""The README's demo command sets itself up (issue 16): with nothing answering on its AMQP URL,
`fedmq run` starts a private RabbitMQ node for the run and stops it afterwards; without RabbitMQ
installed it stops at once with one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedmq import local_broker
from fedmq.local_broker import answers, broker_for

pytestmark = pytest.mark.integration
PORT = 5697  # nothing of the machine's or of other tests' listens here


def test_fedmq_run_starts_its_own_broker_when_none_answers(tmp_path: Path) -> None:
    # Given nothing listening on the URL's port
    assert not answers("127.0.0.1", PORT)
    url = f"amqp://guest:guest@127.0.0.1:{PORT}/%2F"

    # When the demo command runs against it
    result = subprocess.run(
        [sys.executable, "-m", "fedmq", "run", "--workers", "2", "--dataset", "digits",
         "--max-updates", "10", "--amqp-url", url, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=400)

    # Then the job runs to its end on a private node, and that node is gone afterwards
    assert result.returncode == 0, result.stderr[-4000:]
    assert "starting a private RabbitMQ node" in result.stderr
    assert json.loads(result.stdout)["updates_applied"] == 10
    assert not answers("127.0.0.1", PORT)


def test_without_rabbitmq_installed_the_demo_stops_with_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given no RabbitMQ on this machine, and nothing listening
    monkeypatch.setattr(local_broker, "rabbitmq_script", lambda name: None)
    # When a run needs a broker, then it is refused at once, saying how to get one
    url = f"amqp://guest:guest@127.0.0.1:{PORT}/%2F"
    with pytest.raises(local_broker.ConfigError, match="RabbitMQ is not installed") as refused, \
            broker_for(url):
        pass
    assert "apt-get install rabbitmq-server" in str(refused.value)
    assert "\n" not in str(refused.value)
