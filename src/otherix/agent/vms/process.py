"""Who a QEMU process is: its pid, start time and command line, read from ``/proc``.

A pid alone names a process only until it exits: the kernel hands the number out again.
So the runtime keeps, next to QEMU's pidfile, the :class:`Identity` of the QEMU it
started (``started``: ``/proc/<pid>/stat`` field 22, the start time in clock ticks since
boot, and the argv it exec'd, which ``/proc/<pid>/cmdline`` shows), and a restarted
agent re-attaches to a pid only when ``is_alive(identity)``: the process exists, is not
a zombie, and both its start time and its command line are the ones recorded. A reused
pid (another program, or another QEMU) is not ours.

``exit_detail`` words an exit status the way the runtime reports it. Only the agent
process that started QEMU is its parent and can wait for it, so a QEMU the agent
re-attached to has no exit status; the runtime says so instead of inventing one.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Identity",
    "exit_detail",
    "identity_of",
    "is_alive",
    "read_pidfile",
    "start_time_of",
    "started",
]

_PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class Identity:
    pid: int
    start_time: int  # clock ticks after boot (/proc/<pid>/stat field 22)
    cmdline: tuple[str, ...]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses
    return raw[raw.rindex(")") + 2 :].split()


def start_time_of(pid: int) -> int | None:
    """The start time of the live (non-zombie) process ``pid``, or None."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    # fields[0] is field 3 (state), so field 22 (starttime) is fields[19]
    return int(fields[19])


def started(pid: int, argv: list[str]) -> Identity | None:
    """The identity of a process this agent has just exec'd with ``argv``.

    Right after ``execve`` returns in the parent, the child's ``/proc/<pid>/cmdline``
    can still read empty (the kernel sets the new arguments up after the point where
    the parent learns the exec succeeded), so the command line recorded is the argv
    that was exec'd, which is what ``/proc/<pid>/cmdline`` shows from then on.
    """
    start_time = start_time_of(pid)
    return None if start_time is None else Identity(pid, start_time, tuple(argv))


def identity_of(pid: int) -> Identity | None:
    """The identity of the live (non-zombie) process ``pid``, or None."""
    start_time = start_time_of(pid)
    if start_time is None:
        return None
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    cmdline = tuple(os.fsdecode(part) for part in raw.split(b"\0")[:-1])
    return Identity(pid=pid, start_time=start_time, cmdline=cmdline)


def is_alive(identity: Identity) -> bool:
    """Whether the process ``identity`` names still runs (same pid, start time, cmdline)."""
    return identity_of(identity.pid) == identity


def read_pidfile(path: Path) -> int | None:
    """The pid QEMU wrote to its pidfile, or None when there is no usable one."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def exit_detail(returncode: int | None) -> str:
    """``Popen.returncode`` in words (None: not our child, so no exit status)."""
    if returncode is None:
        return "exit status unknown: QEMU was not started by this agent process"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"
