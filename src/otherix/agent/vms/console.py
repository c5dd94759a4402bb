"""A VM's serial console log: bounded by copy-truncate rotation, and its last lines.

QEMU appends the guest's first serial port to ``console.log`` in the VM's directory
(``-chardev file,append=on``: the file is opened with O_APPEND, so after a truncate QEMU's
next write lands at the new end, offset 0, never past a hole). ``rotate(log, cap)``,
called by the runtime each time it observes a VM, copies ``console.log`` to
``console.log.1`` (replacing the previous one; only its last ``cap`` bytes) and truncates
it once it is over ``cap`` bytes. So ``console.log.1`` never holds more than ``cap`` bytes,
and ``console.log`` no more than ``cap`` plus what the guest writes between two
observations. While the agent is down nothing rotates: ``console.log`` grows by whatever
the guest prints until the agent is back (a guest printing 1 KiB/s adds about 3.5 MiB an
hour, unbounded in principle); the first observation after the restart brings it back
under the cap. Lines the guest writes between the copy and the truncate are lost (a
window of one copy).

``tail(log, n)`` is the last ``n`` lines of ``console.log`` and, when that is short, of
``console.log.1`` before it, decoded as UTF-8 with replacement.
"""

from __future__ import annotations

import os
from pathlib import Path

from otherix.agent.fs import atomic_write

__all__ = ["DEFAULT_CAP", "clear", "rotate", "rotated", "tail"]

DEFAULT_CAP = 1024 * 1024
_TAIL_BYTES = 64 * 1024


def rotated(log: Path) -> Path:
    return log.with_name(log.name + ".1")


def rotate(log: Path, cap: int = DEFAULT_CAP) -> bool:
    """Copy-truncate ``log`` to ``log.1`` if it is over ``cap`` bytes; True if it did."""
    try:
        size = log.stat().st_size
    except FileNotFoundError:
        return False
    if size <= cap:
        return False
    atomic_write(rotated(log), _last_bytes(log, cap), mode=0o640)
    os.truncate(log, 0)
    return True


def _last_bytes(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            return f.read()
    except FileNotFoundError:
        return b""


def tail(log: Path, n: int = 20) -> tuple[str, ...]:
    """The last ``n`` lines the guest wrote (``log.1`` first, then ``log``)."""
    if n <= 0:
        return ()
    data = _last_bytes(rotated(log), _TAIL_BYTES) + _last_bytes(log, _TAIL_BYTES)
    lines = data.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return tuple(lines[-n:])


def clear(log: Path) -> None:
    """Forget the console of a previous run of the VM (both files)."""
    for path in (log, rotated(log)):
        path.unlink(missing_ok=True)
