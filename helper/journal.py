"""The helper's journal: every buffer it agreed to answer, one JSON line each, fsynced.

The helper's promises (never an update in two buffers, the same answer for the same buffer after
a crash) must survive a crash, so a buffer is journaled and fsynced before its answer leaves.
A last line cut short by a crash was never fsynced, hence never answered: it is dropped on
opening, before anything is appended.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from common.errors import ConfigError


class Journal:
    """Append-only JSON lines at `path`; `records()` replays what is there."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch()
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        """Cut a last line without its newline (never fsynced whole), so appends stay lines."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
                os.fsync(handle.fileno())

    def records(self) -> list[dict[str, Any]]:
        lines = self.path.read_bytes().split(b"\n")
        out = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if number == len(lines):  # torn last line: the crash came before its fsync
                    break
                raise ConfigError(f"{self.path}:{number} is not a journal record") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{self.path}:{number} is not a journal record")
            out.append(record)
        return out

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        with open(self.path, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
