"""A restarted agent (a second ``VmRuntime`` on the same run directory) re-attaches to
the QEMUs still running, and only to them: a dead QEMU is ``crashed`` (``stopped`` when a
stop had been asked for), a pid now owned by another process is not attached to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

from otherix.agent.vms import record
from otherix.agent.vms.process import identity_of


def test_a_restarted_agent_reattaches_to_the_running_qemu_and_stops_it(runtime, launch, blank_disk):
    first = runtime()
    started = first.start(launch(blank_disk))
    again = runtime()
    [seen] = again.attach_all()
    assert seen.state == "running"
    assert seen.pid == started.pid
    assert seen.accel == "tcg"
    began = time.monotonic()
    stopped = again.stop("vm1", timeout=0.5)
    assert stopped.state == "stopped"
    assert time.monotonic() - began < 8
    # not this runtime's child: it says so instead of inventing an exit status
    assert stopped.exit_status is None
    assert stopped.detail == "exit status unknown: QEMU was not started by this agent process"
    assert identity_of(started.pid) is None


def test_a_restarted_agent_does_not_start_a_second_qemu(runtime, launch, blank_disk):
    started = runtime().start(launch(blank_disk))
    again = runtime()
    again.attach_all()
    assert again.start(launch(blank_disk)).pid == started.pid


def test_a_qemu_that_died_while_the_agent_was_down_is_crashed(runtime, launch, blank_disk):
    first = runtime()
    started = first.start(launch(blank_disk))
    os.kill(started.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while identity_of(started.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    [seen] = runtime().attach_all()
    assert seen.state == "crashed"
    assert seen.pid is None
    assert seen.exit_status is None


def test_a_qemu_asked_to_stop_that_ended_while_the_agent_was_down_is_stopped(
    runtime, launch, blank_disk, base
):
    first = runtime()
    started = first.start(launch(blank_disk))
    state_file = base / "run" / "vm1" / "state.json"
    rec = record.load(state_file)
    assert rec is not None
    record.save(state_file, rec.with_(stopping=True))  # the agent died mid-stop
    os.kill(started.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while identity_of(started.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    [seen] = runtime().attach_all()
    assert seen.state == "stopped"


def test_a_reused_pid_is_not_attached_to(runtime, launch, blank_disk, base):
    first = runtime()
    first.start(launch(blank_disk))
    first.poweroff("vm1")
    state_file = base / "run" / "vm1" / "state.json"
    rec = record.load(state_file)
    assert rec is not None
    assert rec.identity is not None
    # the recorded pid now belongs to another program (a pidfile gone stale)
    foreign = subprocess.Popen(["sleep", "60"])
    try:
        stale = replace(rec.identity, pid=foreign.pid)
        record.save(state_file, replace(rec, identity=stale, stopping=False, outcome=None))
        again = runtime()
        [seen] = again.attach_all()
        assert seen.state == "crashed"
        assert seen.pid is None
        assert again.stop("vm1", timeout=0.1).state == "crashed"
        assert foreign.poll() is None  # never signalled
    finally:
        foreign.kill()
        foreign.wait()


def test_the_same_pid_with_another_start_time_is_not_attached_to(runtime, launch, blank_disk, base):
    started = runtime().start(launch(blank_disk))
    state_file = base / "run" / "vm1" / "state.json"
    rec = record.load(state_file)
    assert rec is not None
    assert rec.identity is not None
    other = replace(rec.identity, start_time=rec.identity.start_time - 1)
    record.save(state_file, replace(rec, identity=other))
    [seen] = runtime().attach_all()
    assert seen.state == "crashed"
    assert identity_of(started.pid) is not None  # the real QEMU is left alone


def test_attach_all_skips_what_is_not_a_vm_record(runtime, base):
    (base / "run" / "junk").mkdir(parents=True)
    (base / "run" / "junk" / "state.json").write_text("{not json")
    (base / "run" / "file").write_text("x")
    assert runtime().attach_all() == []


def test_a_pidfile_naming_another_pid_is_not_attached_to(runtime, launch, blank_disk, base):
    started = runtime().start(launch(blank_disk))
    (base / "run" / "vm1" / "qemu.pid").write_text(f"{os.getpid()}\n")
    [seen] = runtime().attach_all()
    assert seen.state == "crashed"
    assert identity_of(started.pid) is not None


AGENT = """
import os, signal, sys
from pathlib import Path
from otherix.agent.vms import VmLaunch, VmRuntime
base = Path(sys.argv[1])
rt = VmRuntime(base / "run", start_timeout=20)
seen = rt.start(VmLaunch("vm1", "one", base / "blank.qcow2", "qcow2", 1, 64, "tcg",
                         base / "pool" / "vm1"))
print(seen.state, seen.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_qemu_outlives_a_kill_9_of_the_agent_that_started_it(runtime, blank_disk, base):
    agent = subprocess.run(
        [sys.executable, "-c", AGENT, str(base)], capture_output=True, text=True, timeout=60
    )
    assert agent.returncode == -signal.SIGKILL
    state, pid = agent.stdout.split()
    assert state == "running"
    again = runtime()
    [seen] = again.attach_all()
    assert seen.state == "running"
    assert seen.pid == int(pid)
    assert again.poweroff("vm1").state == "stopped"
    deadline = time.monotonic() + 5
    while identity_of(int(pid)) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert identity_of(int(pid)) is None
