"""Process identity from /proc: a live process, a zombie, a reused pid, exit statuses."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from otherix.agent.vms.process import (
    exit_detail,
    identity_of,
    is_alive,
    read_pidfile,
    start_time_of,
    started,
)


def settled_identity(pid):
    """identity_of once the new program's arguments are readable (they read empty for a
    moment after the exec)."""
    deadline = time.monotonic() + 5
    while (ident := identity_of(pid)) is not None and not ident.cmdline:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return ident


def test_the_identity_of_a_live_process_is_its_start_time_and_cmdline():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        ident = settled_identity(proc.pid)
        assert ident is not None
        assert ident.cmdline == ("sleep", "30")
        assert started(proc.pid, ["sleep", "30"]) == ident
        assert ident.start_time > 0
        assert is_alive(ident)
        assert not is_alive(replace(ident, start_time=ident.start_time + 1))
        assert not is_alive(replace(ident, cmdline=("sleep", "31")))
    finally:
        proc.kill()
        proc.wait()
    assert not is_alive(ident)
    assert identity_of(proc.pid) is None


def test_a_zombie_is_not_alive():
    proc = subprocess.Popen(["true"])
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + 5
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not yet waited for
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert identity_of(proc.pid) is None
    assert start_time_of(proc.pid) is None
    assert started(proc.pid, ["true"]) is None
    proc.wait()


def test_a_comm_with_spaces_and_parentheses_is_parsed(tmp_path):
    script = tmp_path / "a (b) c"
    os.symlink("/bin/sleep", script)
    proc = subprocess.Popen([str(script), "30"])
    try:
        ident = settled_identity(proc.pid)
        assert ident is not None
        assert ident.cmdline == (str(script), "30")
    finally:
        proc.kill()
        proc.wait()


def test_read_pidfile(tmp_path):
    path = tmp_path / "qemu.pid"
    assert read_pidfile(path) is None
    path.write_text("1234\n")
    assert read_pidfile(path) == 1234
    path.write_text("junk\n")
    assert read_pidfile(path) is None


def test_exit_detail_words():
    assert exit_detail(0) == "exit status 0"
    assert exit_detail(1) == "exit status 1"
    assert exit_detail(-9) == "killed by SIGKILL"
    assert exit_detail(-200) == "killed by signal 200"
    assert exit_detail(None) == "exit status unknown: QEMU was not started by this agent process"
