"""The coordinator's checkpoint: one file, `<out>/checkpoint.npz`, replaced atomically.

It holds everything a restarted coordinator needs to go on with the same job at the same version:
the global weights, the strategy's state (FedBuff buffer and momentum, FedAvg round), the job's
bookkeeping (applied update ids in order, issued tasks and tasks in flight, counters), the
history so far and the sealed-mode and privacy state. Arrays are stored as npz members and
everything else as one JSON document inside the same archive, so a checkpoint is read with
`allow_pickle=False` and can never execute code. Writing goes to a temporary file, is fsynced and
then renamed over the old checkpoint: a crash at any moment leaves either the old or the new one.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from common.errors import ConfigError

CHECKPOINT_NAME = "checkpoint.npz"
LOCK_NAME = "coordinator.lock"
FORMAT = 1
_STATE_KEY = "state_json"
_ARRAY_REF = "$array"


class CheckpointError(ConfigError):
    """A checkpoint that cannot be read or belongs to another job: an operator must choose
    (exit code 3, which the compose file does not restart for ever: docs/reliability.md)."""

    exit_code = 3


def path_in(out: Path) -> Path:
    return out / CHECKPOINT_NAME


def lock(out: Path) -> IO[str]:
    """Hold `<out>/coordinator.lock` for the life of the process (the OS lets go when it dies,
    kill -9 included): a second coordinator on the same directory would resume a checkpoint
    that the first one keeps changing, and overwrite it. Keep the returned file open."""
    handle = _try_lock(out)
    if handle is None:
        raise CheckpointError(f"{out} is in use by another coordinator (pid {holder(out)}); "
                              "give each coordinator its own --out, or start this one with "
                              "--standby") from None
    return handle


def await_lock(out: Path, stop: threading.Event, poll: float = 0.2) -> IO[str] | None:
    """A standby's `lock`: wait until the holder lets go (it ended or died); None if `stop`."""
    while not stop.is_set():
        handle = _try_lock(out)
        if handle is not None:
            return handle
        stop.wait(poll)
    return None


def holder(out: Path) -> str:
    """The pid written by the coordinator holding `out` (for messages)."""
    try:
        return (out / LOCK_NAME).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _try_lock(out: Path) -> IO[str] | None:
    out.mkdir(parents=True, exist_ok=True)
    handle = (out / LOCK_NAME).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def pack_strings(strings: list[str]) -> dict[str, np.ndarray]:
    """Many strings as two arrays (UTF-8 bytes, lengths): ids by the hundred thousand cost a few
    milliseconds this way, against a tenth of a second as JSON."""
    encoded = [text.encode() for text in strings]
    return {"utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8),
            "lengths": np.array([len(b) for b in encoded], dtype=np.int32)}


def unpack_strings(packed: dict[str, np.ndarray]) -> list[str]:
    """Inverse of `pack_strings`."""
    blob = bytes(np.asarray(packed["utf8"], dtype=np.uint8))
    ends = np.cumsum(np.asarray(packed["lengths"], dtype=np.int64)).tolist()
    if (ends[-1] if ends else 0) != len(blob):
        raise CheckpointError("packed strings do not match their lengths")
    starts = [0, *ends[:-1]] if ends else []
    return [blob[a:b].decode() for a, b in zip(starts, ends, strict=True)]


def _split(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """`value` with every ndarray replaced by a reference to a member of `arrays`."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:  # it would be pickled, and unpickled on load
            raise CheckpointError(f"refusing to checkpoint an array of dtype {value.dtype}")
        key = f"a{len(arrays)}"
        arrays[key] = value
        return {_ARRAY_REF: key}
    if isinstance(value, dict):
        return {str(k): _split(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, arrays) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _join(value: Any, arrays: Any) -> Any:
    """Inverse of `_split`."""
    if isinstance(value, dict):
        if set(value) == {_ARRAY_REF}:
            return np.array(arrays[value[_ARRAY_REF]])
        return {k: _join(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, arrays) for v in value]
    return value


@dataclass(frozen=True)
class Prepared:
    """A state ready to be written: its JSON document and the arrays it refers to. Preparing
    walks the state (on the thread that owns it); writing only reads these (any thread)."""

    arrays: dict[str, np.ndarray]


def prepare(state: dict[str, Any]) -> Prepared:
    """Split `state` (JSON-able values and ndarrays) into what `write` puts on disk."""
    arrays: dict[str, np.ndarray] = {}
    document = _split({"format": FORMAT, **state}, arrays)
    text = json.dumps(document, separators=(",", ":")).encode()
    arrays[_STATE_KEY] = np.frombuffer(text, dtype=np.uint8)
    return Prepared(arrays)


def write(path: Path, prepared: Prepared) -> int:
    """Write a prepared state atomically; returns the bytes written. The archive is written
    straight to the temporary file (no copy of the model in memory first)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        np.savez(handle, **prepared.arrays)  # type: ignore[arg-type]  # (numpy stubs)
        handle.flush()
        size = handle.tell()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must survive a power cut
    finally:
        os.close(directory)
    return size


def save(path: Path, state: dict[str, Any]) -> int:
    """Write `state` (JSON-able values and ndarrays) atomically; returns the bytes written."""
    return write(path, prepare(state))


def load(path: Path) -> dict[str, Any]:
    """The state saved by `save`; CheckpointError if the file is not a readable checkpoint."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            document = json.loads(bytes(archive[_STATE_KEY]).decode())
            state = _join(document, archive)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}. The job cannot be resumed from it; nothing "
            f"was changed. Keep the file for inspection (move it aside) and start the job over "
            f"with --no-resume, or put back a good copy") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has an unknown format")
    return state
