"""A network partition of one RabbitMQ node on this machine (issue 11): its own cgroup and one
iptables chain.

All the nodes talk over loopback, so addresses cannot tell them apart, and ports only half way
(a node's connections to its peers leave from ephemeral ports). What does tell them apart is the
process: each node is started inside a cgroup (v2) of its own, and cutting a node off is one
chain, jumped to from both OUTPUT and INPUT, of two rules:

- `-m cgroup --path <its cgroup> -j DROP`: nothing the node sends leaves it, not a byte of its
  inter-node traffic, not an AMQP frame, not a TCP acknowledgement (a cgroup match sees the
  sending socket in OUTPUT only: tried in INPUT, it did not match loopback traffic);
- `-p tcp --dports <its AMQP, management and distribution ports> -j DROP`: nothing reaches it on
  the ports it listens on, on connections old or new.

Its peers stop hearing its ticks and drop it after `net_ticktime`; it stops hearing theirs on the
connections they opened (and sees the others closed), so it drops them too and, with
`pause_minority`, pauses; its clients miss its heartbeats. Both sides see what a switch failure
shows them. `heal` removes the chain. Needs root, iptables and a cgroup2 mount (the Debian
machines of CI have all three; .ci/run installs iptables).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

CHAIN = "FEDMQ-PARTITION"


def cgroup2_root() -> Path:
    """Where the unified (v2) cgroup hierarchy is mounted: /sys/fs/cgroup on a pure v2 machine,
    /sys/fs/cgroup/unified on a hybrid one."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == "cgroup2":
            return Path(fields[1])
    raise AssertionError("no cgroup2 mount: a node cannot be partitioned on this machine")


def make_cgroup(name: str) -> Path:
    """A cgroup of its own for one node; its `cgroup.procs` is what a process writes its pid to."""
    path = cgroup2_root() / name
    path.mkdir(exist_ok=True)
    return path


def procs_file(path: Path) -> int:
    """A descriptor of the cgroup's `cgroup.procs`, opened in the parent: a child writes b"0"
    to it before it execs (`os.write` only: a forked child of a threaded parent must not take
    Python's locks) and it, and everything it starts, is in the cgroup."""
    return os.open(path / "cgroup.procs", os.O_WRONLY)


def kill_all(path: Path) -> None:
    """SIGKILL every process left in the cgroup (`cgroup.kill`, Linux 5.14 and later; on an
    older kernel `remove_cgroup` waits for them and warns)."""
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")


def remove_cgroup(path: Path, timeout: float = 30) -> None:
    """Remove the cgroup once its processes are gone (a node's VM outlives `rabbitmqctl stop`
    by a moment); one still in use after `timeout` is left, with a warning."""
    deadline = time.monotonic() + timeout
    while path.exists():
        try:
            path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                warnings.warn(f"cgroup {path} still has processes; left in place", stacklevel=2)
                return
            time.sleep(0.2)


def _iptables(*args: str, check: bool = True) -> None:
    iptables = shutil.which("iptables")
    if iptables is None:
        if check:
            raise AssertionError("iptables is not installed: a node cannot be partitioned")
        return  # nothing can have been cut off
    subprocess.run([iptables, "-w", *args], check=check, capture_output=True, text=True)


def cut_off(cgroup: Path, ports: list[int]) -> None:
    """Partition the processes of `cgroup` from everything else on the machine."""
    _iptables("-N", CHAIN, check=False)  # exists already after an earlier partition
    _iptables("-F", CHAIN)
    relative = "/" + str(cgroup.relative_to(cgroup2_root()))
    _iptables("-A", CHAIN, "-m", "cgroup", "--path", relative, "-j", "DROP")
    _iptables("-A", CHAIN, "-p", "tcp", "-m", "multiport", "--dports",
              ",".join(map(str, ports)), "-j", "DROP")
    for hook in ("OUTPUT", "INPUT"):
        _iptables("-D", hook, "-j", CHAIN, check=False)
        _iptables("-I", hook, "1", "-j", CHAIN)


def heal() -> None:
    """Remove the partition (idempotent)."""
    for hook in ("OUTPUT", "INPUT"):
        _iptables("-D", hook, "-j", CHAIN, check=False)
    _iptables("-F", CHAIN, check=False)
    _iptables("-X", CHAIN, check=False)
