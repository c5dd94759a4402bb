"""A small synchronous facade over ``qemu.qmp.QMPClient`` for the (synchronous) agent.

``execute(socket, command, timeout)`` connects to a QEMU's QMP unix socket, negotiates,
runs one command, disconnects, and returns the reply's ``return`` value. Each call runs
its own event loop (``asyncio.run``), so the caller needs none; a QEMU serves one QMP
client at a time, and the runtime holds its per-VM lock around each call. Every failure
(no socket, QEMU gone, a timeout, a QMP error reply) is :class:`QmpError`, the one
place the library's exceptions are translated.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from qemu.qmp import QMPClient, QMPError

__all__ = ["QmpError", "execute"]


class QmpError(Exception):
    """A QMP command could not be run (connection, protocol, timeout or error reply)."""


async def _execute(socket: Path, command: str, seconds: float) -> object:
    client = QMPClient("otherix")
    async with asyncio.timeout(seconds):
        await client.connect(str(socket))
    try:
        async with asyncio.timeout(seconds):
            return await client.execute(command)
    finally:
        # after `quit` QEMU hangs up first; the disconnect then reports the EOF
        with contextlib.suppress(QMPError, OSError, EOFError):
            await client.disconnect()


def execute(socket: Path, command: str, timeout: float = 5.0) -> object:
    """Run ``command`` on the QEMU listening on ``socket``; its ``return`` value."""
    try:
        return asyncio.run(_execute(socket, command, timeout))
    except (QMPError, OSError, EOFError, TimeoutError) as exc:
        raise QmpError(f"QMP {command} on {socket}: {exc or type(exc).__name__}") from exc
