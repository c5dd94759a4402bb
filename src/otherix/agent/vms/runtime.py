"""The VM runtime: one ``qemu-system-x86_64`` process per running VM, driven over QMP.

``VmRuntime(run_dir)`` is what the agent (later: its VM tasks) calls:

- ``start(launch)`` starts QEMU in its own session (it outlives the agent), waits until
  QMP answers ``query-status`` (``running``) or QEMU exits (``failed``, with QEMU's own
  stderr) or the start timeout passes (killed, ``failed``). A start of a VM whose QEMU is
  alive starts nothing and reports that QEMU: a per-VM thread lock plus an ``flock`` on
  ``<run_dir>/<vm_id>/lock`` make two concurrent starts one QEMU. Another QEMU on the
  same disk (another VM id, another agent) fails on QEMU's own image lock, which the
  running QEMU holds for as long as it runs, agent or no agent;
- ``stop(vm_id, timeout)``: ACPI power-down (QMP ``system_powerdown``), then
  ``poweroff`` when the guest has not gone in ``timeout`` seconds;
- ``poweroff(vm_id)``: QMP ``quit``, then SIGKILL if QEMU is still there
  ``qmp_timeout`` seconds later (a QEMU that does not answer QMP, e.g. stopped);
- ``restart(vm_id, timeout)``: ``stop`` then ``start`` from the same launch;
- ``state(vm_id) -> ObservedVm``: observes (and rotates the console log);
- resource limits: right after ``Popen`` QEMU is moved into its own cgroup with its
  memory and CPU limits (``cgroups.CgroupSupport``, detected unless given; best effort,
  reported in ``ObservedVm.limits``); the group is removed when the VM's end is recorded;
- ``attach_all()`` on agent start: re-attaches to each QEMU recorded in the run
  directory whose pid (QEMU's pidfile, which must agree with the state file) still has
  the recorded start time and command line; a VM whose
  QEMU died meanwhile is ``crashed`` (``stopped`` if a stop had been asked for).

States: ``starting`` and ``stopping`` while a call is at it, ``running``, ``stopped``
(asked to stop, or QEMU exited 0: the guest powered off), ``crashed`` (QEMU exited without
being asked, with its exit status when this process started it and the last console
lines), ``failed`` (QEMU did not come up). Files: ``command.RunPaths``, ``record``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from otherix.agent.fs import make_dir, remove_file, safe_join
from otherix.agent.vms import cgroups, console, qmp, record
from otherix.agent.vms.command import RunPaths, VmLaunch, qemu_command
from otherix.agent.vms.observed import ObservedVm, UnknownVm, VmState
from otherix.agent.vms.process import exit_detail, is_alive, read_pidfile, started
from otherix.agent.vms.record import Outcome, VmRecord

__all__ = ["VmRuntime"]


@dataclass
class _Vm:
    record: VmRecord
    paths: RunPaths
    popen: subprocess.Popen[bytes] | None = None
    busy: VmState | None = None  # "starting"/"stopping" while a call is at it


class VmRuntime:
    def __init__(
        self,
        run_dir: Path,
        *,
        start_timeout: float = 30.0,
        qmp_timeout: float = 5.0,
        console_cap: int = console.DEFAULT_CAP,
        console_lines: int = 20,
        limits: cgroups.CgroupSupport | None = None,
    ) -> None:
        self.run_dir = run_dir
        # None: detect (the real /sys/fs/cgroup); tests pass their own
        self.limits = cgroups.detect() if limits is None else limits
        self.start_timeout = start_timeout
        self.qmp_timeout = qmp_timeout  # per QMP command; also how long `quit` gets
        self.console_cap = console_cap
        self.console_lines = console_lines
        self._vms: dict[str, _Vm] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # -- locking ------------------------------------------------------------------------

    def _paths(self, vm_id: str) -> RunPaths:
        return RunPaths(safe_join(self.run_dir, vm_id))

    @contextlib.contextmanager
    def _locked(self, vm_id: str) -> Iterator[RunPaths]:
        paths = self._paths(vm_id)
        with self._guard:
            lock = self._locks.setdefault(vm_id, threading.Lock())
        with lock:
            make_dir(self.run_dir, 0o700)
            make_dir(paths.directory, 0o700)
            fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield paths
            finally:
                os.close(fd)

    def _vm(self, vm_id: str) -> _Vm:
        vm = self._vms.get(vm_id)
        if vm is None:
            raise UnknownVm(vm_id)
        return vm

    def vm_ids(self) -> list[str]:
        """The VMs this runtime has started or attached to."""
        return sorted(self._vms)

    # -- observing ----------------------------------------------------------------------

    def _alive(self, vm: _Vm) -> bool:
        if vm.record.outcome is not None or vm.record.identity is None:
            return False
        if vm.popen is not None:
            return vm.popen.poll() is None
        return is_alive(vm.record.identity)

    def _settle(self, vm: _Vm) -> None:
        """Record how a QEMU that is no longer alive ended (once). A QEMU that ends while
        ``start`` waits for it is ``start``'s to record (``failed``)."""
        if vm.record.outcome is not None or vm.busy == "starting" or self._alive(vm):
            return
        status = vm.popen.returncode if vm.popen is not None else None
        ended: Literal["stopped", "crashed"] = (
            "stopped" if vm.record.stopping or status == 0 else "crashed"
        )
        vm.record = vm.record.with_(outcome=Outcome(ended, status, exit_detail(status)))
        record.save(vm.paths.state_file, vm.record)
        self.limits.remove(vm.record.launch.vm_id)

    def state(self, vm_id: str) -> ObservedVm:
        vm = self._vm(vm_id)
        self._settle(vm)
        rec = vm.record
        log = rec.launch.console_log
        if rec.outcome is None and rec.identity is not None:
            console.rotate(log, self.console_cap)
            return ObservedVm(
                vm_id,
                vm.busy or "running",
                pid=rec.identity.pid,
                accel=rec.launch.accel,
                uptime_s=max(0.0, time.time() - rec.started_at),
                console=console.tail(log, self.console_lines),
                limits=rec.limits,
                started_at=rec.started_at,
                stop_asked=rec.stopping,
            )
        out = rec.outcome
        return ObservedVm(
            vm_id,
            out.state if out is not None else "failed",  # None: QEMU exited at once
            accel=rec.launch.accel,
            exit_status=out.exit_status if out is not None else None,
            detail=out.detail if out is not None else None,
            console=console.tail(log, self.console_lines),
            limits=rec.limits,
            started_at=rec.started_at if rec.identity is not None else None,
            stop_asked=rec.stopping,
        )

    def launch_of(self, vm_id: str) -> VmLaunch:
        """The launch the VM last ran (or tried to run) with."""
        return self._vm(vm_id).record.launch

    def alive(self, vm_id: str) -> bool:
        """True while the VM's QEMU runs (False for a VM this runtime does not know)."""
        vm = self._vms.get(vm_id)
        return vm is not None and self._alive(vm)

    def forget(self, vm_id: str) -> bool:
        """Drop a VM whose QEMU is not running: its run directory goes (the VM is being
        deleted). False, and nothing removed, while its QEMU runs."""
        with self._locked(vm_id) as paths:
            vm = self._vms.get(vm_id) or self._load(vm_id)
            if vm is not None and self._alive(vm):
                return False
            for name in (paths.state_file, paths.pidfile, paths.qmp_socket, paths.stderr_log):
                remove_file(name)
            self._vms.pop(vm_id, None)
            self.limits.remove(vm_id)
        remove_file(paths.lock_file)
        with contextlib.suppress(OSError):
            paths.directory.rmdir()
        return True

    # -- start --------------------------------------------------------------------------

    def start(self, launch: VmLaunch) -> ObservedVm:
        """Start ``launch``'s QEMU unless it already runs; the VM as observed after."""
        with self._locked(launch.vm_id) as paths:
            # under the flock the state file is the truth: another agent may have started
            # the VM since this runtime last looked
            for known in (self._vms.get(launch.vm_id), self._load(launch.vm_id)):
                if known is not None and self._alive(known):
                    self._vms[launch.vm_id] = known
                    return self.state(launch.vm_id)
            for stale in (paths.qmp_socket, paths.pidfile):
                remove_file(stale)
            argv = qemu_command(launch, paths)
            make_dir(launch.vm_dir, 0o750)
            try:
                with paths.stderr_log.open("wb") as err:
                    proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        cwd=paths.directory,
                        start_new_session=True,
                    )
            except OSError as exc:
                vm = _Vm(VmRecord(launch, None, time.time()), paths)
                self._vms[launch.vm_id] = vm
                self._failed(vm, f"cannot run {argv[0]}: {exc.strerror or exc}")
                return self.state(launch.vm_id)
            # into its cgroup before QMP is awaited: QEMU has not mapped guest RAM yet
            placed = self.limits.place(proc.pid, launch.vm_id, launch.memory_mb, launch.vcpus)
            identity = started(proc.pid, argv)
            rec = VmRecord(launch, identity, time.time(), limits=placed.limits)
            vm = _Vm(rec, paths, proc, busy="starting")
            self._vms[launch.vm_id] = vm
            record.save(paths.state_file, vm.record)
            try:
                self._await_ready(vm)
            finally:
                vm.busy = None
            return self.state(launch.vm_id)

    def _await_ready(self, vm: _Vm) -> None:
        assert vm.popen is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if vm.popen.poll() is not None:
                return self._failed(vm, self._stderr(vm) or exit_detail(vm.popen.returncode))
            if vm.paths.qmp_socket.exists():
                with contextlib.suppress(qmp.QmpError):
                    qmp.execute(vm.paths.qmp_socket, "query-status", timeout=1.0)
                    return None
            if time.monotonic() > deadline:
                vm.popen.kill()
                vm.popen.wait()
                why = f"QEMU did not answer QMP within {self.start_timeout:g} s"
                return self._failed(vm, f"{why}: {self._stderr(vm)}".rstrip(": "))
            time.sleep(0.05)

    def _stderr(self, vm: _Vm) -> str:
        try:
            return vm.paths.stderr_log.read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def _failed(self, vm: _Vm, message: str) -> None:
        status = vm.popen.returncode if vm.popen is not None else None
        vm.record = vm.record.with_(outcome=Outcome("failed", status, message))
        record.save(vm.paths.state_file, vm.record)
        self.limits.remove(vm.record.launch.vm_id)

    # -- stop ---------------------------------------------------------------------------

    def stop(self, vm_id: str, timeout: float = 60.0) -> ObservedVm:
        """ACPI power-down; power off if the guest is still running after ``timeout``."""
        self._vm(vm_id)
        with self._locked(vm_id):
            vm = self._vm(vm_id)
            if self._begin_stop(vm):
                try:
                    with contextlib.suppress(qmp.QmpError):
                        qmp.execute(vm.paths.qmp_socket, "system_powerdown", self.qmp_timeout)
                    if not self._wait_exit(vm, timeout):
                        self._power_off(vm)
                finally:
                    vm.busy = None
            return self.state(vm_id)

    def poweroff(self, vm_id: str) -> ObservedVm:
        """Power off at once (QMP ``quit``; SIGKILL when QMP does not do it)."""
        self._vm(vm_id)
        with self._locked(vm_id):
            vm = self._vm(vm_id)
            if self._begin_stop(vm):
                try:
                    self._power_off(vm)
                finally:
                    vm.busy = None
            return self.state(vm_id)

    def restart(self, vm_id: str, timeout: float = 60.0) -> ObservedVm:
        """``stop`` (with ``timeout``), then ``start`` from the launch it last ran with."""
        self.stop(vm_id, timeout)
        return self.start(self._vm(vm_id).record.launch)

    def _begin_stop(self, vm: _Vm) -> bool:
        if not self._alive(vm):
            # QEMU is gone already (crashed, perhaps waiting out a restart's backoff): the
            # stop is recorded all the same, so no restart policy undoes it
            if not vm.record.stopping:
                vm.record = vm.record.with_(stopping=True)
                record.save(vm.paths.state_file, vm.record)
            return False
        vm.busy = "stopping"
        vm.record = vm.record.with_(stopping=True)
        record.save(vm.paths.state_file, vm.record)
        return True

    def _power_off(self, vm: _Vm) -> None:
        with contextlib.suppress(qmp.QmpError):
            qmp.execute(vm.paths.qmp_socket, "quit", self.qmp_timeout)
        if self._wait_exit(vm, self.qmp_timeout) or vm.record.identity is None:
            return
        if self._alive(vm):
            with contextlib.suppress(ProcessLookupError):
                os.kill(vm.record.identity.pid, signal.SIGKILL)
        self._wait_exit(vm, 5.0)

    def _wait_exit(self, vm: _Vm, timeout: float) -> bool:
        if vm.popen is not None:
            try:
                vm.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while self._alive(vm):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    # -- re-attach ----------------------------------------------------------------------

    def _load(self, vm_id: str) -> _Vm | None:
        """The VM recorded on disk. The pid is the one in QEMU's pidfile when there is
        one: a pidfile naming another pid than the record's makes the record dead."""
        paths = self._paths(vm_id)
        rec = record.load(paths.state_file)
        if rec is None:
            return None
        pid = read_pidfile(paths.pidfile)
        if rec.identity is not None and pid is not None and pid != rec.identity.pid:
            rec = replace(rec, identity=replace(rec.identity, pid=pid))
        return _Vm(rec, paths)

    def attach_all(self) -> list[ObservedVm]:
        """Find every VM recorded in the run directory (agent start); each as observed."""
        found: list[ObservedVm] = []
        if not self.run_dir.is_dir():
            return found
        for entry in sorted(self.run_dir.iterdir()):
            vm = self._load(entry.name) if entry.is_dir() else None
            if vm is None or vm.record.launch.vm_id != entry.name:
                continue
            with self._guard:
                self._vms.setdefault(entry.name, vm)
            found.append(self.state(entry.name))
        return found
