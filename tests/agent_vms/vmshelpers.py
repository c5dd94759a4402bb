"""Helpers of the VM runtime tests: the processes a test started, found by command line,
and a bounded wait."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def processes_naming(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def qemus(text: str) -> list[int]:
    """The live QEMUs whose command line contains ``text``."""
    return [
        p
        for p in processes_naming(text)
        if Path(f"/proc/{p}/comm").read_text().startswith("qemu-system")
    ]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
