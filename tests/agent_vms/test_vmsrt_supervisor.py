"""The VM supervisor (otherix.agent.vms.supervisor) over real QEMUs on a blank disk.

The backoff runs on a fake monotonic clock the test moves (``Tick``), so a restart
"after 2 s" is checked without sleeping; the reported ``next_restart_at`` comes from a
fake wall clock. A guest that powers itself off is a QMP ``quit`` sent straight to QEMU
(not through the runtime): QEMU exits 0 and the runtime never asked for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import replace
from datetime import UTC, datetime

from vmshelpers import qemus, wait_for

from otherix.agent.vms import RunPaths, VmRuntime, qmp
from otherix.agent.vms.supervisor import VmSupervisor

WALL = 1_800_000_000.0


class Tick:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def supervisor(rt: VmRuntime, clock: Tick, **kw: float) -> VmSupervisor:
    return VmSupervisor(rt, monotonic=clock, wall=lambda: WALL + clock.now - 1000.0, **kw)


def at(seconds: float) -> datetime:
    """The reported restart time ``seconds`` after the fake wall clock's start."""
    return datetime.fromtimestamp(WALL + seconds, UTC)


def kill(rt: VmRuntime, vm_id: str = "vm1") -> int:
    obs = rt.state(vm_id)
    assert obs.state == "running"
    assert obs.pid is not None
    os.kill(obs.pid, signal.SIGKILL)
    wait_for(lambda: not rt.alive(vm_id))
    return obs.pid


def report(sup: VmSupervisor, vm_id: str = "vm1"):
    [obs] = [o for o in sup.observations() if o.id == vm_id]
    return obs


def guest_power_off(base, rt: VmRuntime, vm_id: str = "vm1") -> None:
    """The guest's own power-off as the runtime sees it: QEMU exits 0, nobody asked."""
    qmp.execute(RunPaths(base / "run" / vm_id).qmp_socket, "quit")
    wait_for(lambda: not rt.alive(vm_id))


def test_a_killed_qemu_is_restarted_after_a_backoff_that_doubles(
    runtime, launch, blank_disk, base
) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock, backoff_initial=1.0, backoff_max=60.0)
    first = rt.start(launch(blank_disk))
    sup.tick()
    assert report(sup).state == "running"
    assert report(sup).restarts == 0

    kill(rt)
    sup.tick()
    crashed = report(sup)
    assert crashed.state == "crashed"
    assert crashed.pid is None
    assert crashed.exit_status == -9
    assert crashed.next_restart_at == at(1.0)
    assert crashed.restarts == 0

    clock.now += 0.9  # before the delay: nothing is started
    sup.tick()
    assert report(sup).state == "crashed"
    assert qemus(str(base)) == []

    clock.now += 0.1
    sup.tick()
    again = report(sup)
    assert again.state == "running"
    assert again.pid not in (None, first.pid)
    assert again.restarts == 1
    assert again.next_restart_at is None
    assert qemus(str(base)) == [again.pid]

    # the second crash in a row waits twice as long
    kill(rt)
    sup.tick()
    assert report(sup).next_restart_at == at(1.0 + 2.0)
    clock.now += 1.9
    sup.tick()
    assert report(sup).state == "crashed"
    assert qemus(str(base)) == []
    clock.now += 0.1
    sup.tick()
    third = report(sup)
    assert third.state == "running"
    assert third.pid not in (None, first.pid, again.pid)
    assert third.restarts == 2

    # and the third four times: the cap holds it at backoff_max
    sup.backoff_max = 3.0
    kill(rt)
    sup.tick()
    assert report(sup).next_restart_at == at(1.0 + 2.0 + 3.0)


def test_the_backoff_starts_again_when_someone_starts_the_vm(runtime, launch, blank_disk) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock, backoff_initial=1.0)
    rt.start(launch(blank_disk))
    sup.tick()
    kill(rt)
    sup.tick()
    clock.now += 1.0
    sup.tick()  # restarted once: the next delay would be 2 s
    assert report(sup).restarts == 1
    sup.asked("vm1")
    kill(rt)
    sup.tick()
    assert report(sup).next_restart_at == at(1.0 + 1.0)
    assert report(sup).restarts == 1  # the count of restarts is kept


def test_the_backoff_starts_again_once_the_vm_ran_stable_after(runtime, launch, blank_disk) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock, backoff_initial=1.0, stable_after=0.0)
    rt.start(launch(blank_disk))
    sup.tick()
    kill(rt)
    sup.tick()
    clock.now += 1.0
    sup.tick()  # restarted
    sup.tick()  # observed running for stable_after (0 s): the backoff is reset
    kill(rt)
    sup.tick()
    assert report(sup).next_restart_at == at(1.0 + 1.0)


def test_never_leaves_a_crashed_vm_crashed(runtime, launch, blank_disk, base) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock)
    rt.start(replace(launch(blank_disk), restart_policy="never"))
    kill(rt)
    sup.tick()
    assert report(sup).state == "crashed"
    assert report(sup).next_restart_at is None
    clock.now += 3600
    sup.tick()
    assert report(sup).state == "crashed"
    assert report(sup).restarts == 0
    assert qemus(str(base)) == []


def test_always_restarts_a_guest_that_powered_itself_off(runtime, launch, blank_disk, base) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock)
    first = rt.start(replace(launch(blank_disk), restart_policy="always"))
    guest_power_off(base, rt)
    sup.tick()
    off = report(sup)
    assert off.state == "stopped"
    assert off.exit_status == 0
    assert off.next_restart_at == at(1.0)
    assert not rt.state("vm1").stop_asked
    clock.now += 1.0
    sup.tick()
    again = report(sup)
    assert again.state == "running"
    assert again.pid not in (None, first.pid)
    assert again.restarts == 1


def test_on_failure_leaves_a_guest_that_powered_itself_off_stopped(
    runtime, launch, blank_disk, base
) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock)
    rt.start(launch(blank_disk))  # the default policy: on-failure
    assert rt.launch_of("vm1").restart_policy == "on-failure"
    guest_power_off(base, rt)
    sup.tick()
    assert report(sup).state == "stopped"
    assert report(sup).next_restart_at is None
    clock.now += 3600
    sup.tick()
    assert report(sup).state == "stopped"
    assert report(sup).restarts == 0
    assert qemus(str(base)) == []


def test_a_stop_asked_for_is_never_undone(runtime, launch, blank_disk, base) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock)
    rt.start(replace(launch(blank_disk), restart_policy="always"))
    other = base / "other.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(other), "64M"], check=True)
    rt.start(replace(launch(other, vm_id="vm2"), restart_policy="always"))
    sup.tick()
    assert [o.state for o in sup.observations()] == ["running", "running"]
    rt.poweroff("vm1")
    rt.stop("vm2", timeout=0.2)  # the BIOS ignores ACPI: powered off after the timeout
    for _ in range(3):
        sup.tick()
        clock.now += 3600
    for vm_id in ("vm1", "vm2"):
        obs = report(sup, vm_id)
        assert obs.state == "stopped"
        assert obs.next_restart_at is None
        assert obs.restarts == 0
    assert qemus(str(base)) == []


def test_a_vm_that_failed_to_start_is_not_retried(runtime, launch, base) -> None:
    corrupt = base / "corrupt.qcow2"
    corrupt.write_bytes(os.urandom(64 * 1024))
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock)
    assert rt.start(replace(launch(corrupt), restart_policy="always")).state == "failed"
    for _ in range(3):
        sup.tick()
        clock.now += 3600
    obs = report(sup)
    assert obs.state == "failed"
    assert obs.next_restart_at is None
    assert obs.restarts == 0
    assert obs.detail


def test_a_forgotten_vm_is_not_restarted_nor_reported(runtime, launch, blank_disk, base) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock)
    rt.start(launch(blank_disk))
    sup.tick()
    before = sup.version
    sup.forget("vm1")
    assert sup.observations() == []
    assert sup.version > before
    kill(rt)
    for _ in range(3):
        sup.tick()
        clock.now += 3600
    assert sup.observations() == []
    assert qemus(str(base)) == []
    assert sup.observe("vm1").state == "crashed"  # observing does not report it either
    assert sup.observations() == []

    sup.release("vm1")  # the delete did not happen: supervised again
    sup.tick()
    assert report(sup).state == "crashed"
    clock.now += 1.0
    sup.tick()
    assert report(sup).state == "running"


def test_version_grows_on_a_change_only(runtime, launch, blank_disk) -> None:
    rt, clock = runtime(), Tick()
    sup = supervisor(rt, clock)
    assert sup.version == 0
    sup.tick()  # no VM: nothing changes
    assert sup.version == 0
    assert sup.observations() == []
    rt.start(launch(blank_disk))
    sup.tick()
    running = sup.version
    assert running > 0
    for _ in range(3):
        sup.tick()
    sup.observe("vm1")
    assert sup.version == running
    kill(rt)
    sup.tick()
    crashed = sup.version
    assert crashed > running
    clock.now += 0.5  # still waiting: the report (next_restart_at) is the same
    sup.tick()
    assert sup.version == crashed
    clock.now += 0.5
    sup.tick()
    assert sup.version > crashed


def test_a_restarted_agent_attaches_to_the_running_vm_and_starts_nothing(
    runtime, launch, blank_disk, base
) -> None:
    first_rt, clock = runtime(), Tick()
    first = supervisor(first_rt, clock)
    started = first_rt.start(launch(blank_disk))
    first.tick()

    again_rt = runtime()  # the agent restarted: a new runtime and supervisor, same run dir
    again = supervisor(again_rt, Tick())
    [found] = again.attach()
    assert found.state == "running"
    assert found.pid == started.pid
    obs = report(again)
    assert obs.state == "running"
    assert obs.pid == started.pid
    assert obs.restarts == 0
    again.tick()
    assert qemus(str(base)) == [started.pid]
    assert again_rt.launch_of("vm1").restart_policy == "on-failure"


def test_a_vm_that_died_while_the_agent_was_down_is_restarted_by_its_policy(
    runtime, launch, blank_disk, base
) -> None:
    first_rt = runtime()
    started = first_rt.start(replace(launch(blank_disk), restart_policy="always"))
    os.kill(started.pid, signal.SIGKILL)
    wait_for(lambda: started.pid not in qemus(str(base)))

    clock = Tick()
    again_rt = runtime()
    again = supervisor(again_rt, clock)
    [found] = again.attach()
    assert found.state == "crashed"
    assert report(again).next_restart_at == at(1.0)
    clock.now += 1.0
    again.tick()
    obs = report(again)
    assert obs.state == "running"
    assert obs.pid != started.pid
    # the restart policy survived the agent restart (it is in the state file)
    assert again_rt.launch_of("vm1").restart_policy == "always"


def test_the_supervisor_thread_restarts_a_crashed_vm(runtime, launch, blank_disk) -> None:
    rt = runtime()
    sup = VmSupervisor(rt, interval=0.05, backoff_initial=0.1).start()
    try:
        first = rt.start(launch(blank_disk))
        os.kill(first.pid, signal.SIGKILL)

        def restarted() -> bool:
            return any(
                o.state == "running" and o.restarts == 1 and o.pid != first.pid
                for o in sup.observations()
            )

        wait_for(restarted)
    finally:
        sup.close()
