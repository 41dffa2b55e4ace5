"""A corrupt checkpoint stops the coordinator once, with one clear message and the exit code that
asks for an operator; the compose file does not restart it forever (issue 14, item 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coordinator import checkpoint
from tests.integration.support import Processes

pytestmark = pytest.mark.integration
NEEDS_OPERATOR = 3  # the exit code of a checkpoint that cannot be resumed (docs/reliability.md)


def test_a_truncated_checkpoint_stops_the_coordinator_once_with_a_clear_message(
        procs: Processes, tmp_path: Path) -> None:
    # Given a directory whose checkpoint was cut in half (a full disk, a bad copy)
    out = tmp_path / "out"
    out.mkdir()
    path = checkpoint.path_in(out)
    checkpoint.save(path, {"finished": False, "weights": [np.zeros(1000, np.float32)]})
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])

    # When a coordinator starts on it
    coordinator = procs.start("coordinator", out=out, max_updates=5)

    # Then it exits at once, with the exit code reserved for "an operator must choose", and one
    # message that names the file and the choices; the file is left where it was
    code = procs.wait(coordinator, 120)
    log = coordinator.log()
    assert code == NEEDS_OPERATOR, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert log.count(f"cannot read checkpoint {path}") == 1, log[-3000:]
    assert "--no-resume" in log
    assert path.read_bytes() == data[:len(data) // 2], "the operator's evidence stays as it was"
