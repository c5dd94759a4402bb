"""Per-VM cgroups: each QEMU in a group of its own with its memory and CPU limits.

``detect(root)`` (the agent, once per ``VmRuntime``; ``agent/main.py`` for the node's
capabilities) answers a frozen :class:`CgroupSupport`:

- ``v2``: ``root/cgroup.controllers`` lists ``memory`` and ``cpu``; the agent's parent
  group is ``root/otherix`` (under the root, which the no-internal-processes rule does
  not bind), with ``+memory +cpu`` in its ``cgroup.subtree_control``;
- ``v1``: ``root/memory/`` and ``root/cpu,cpuacct/`` (or ``root/cpu/``) are cgroup
  hierarchies (their control files are there); the parent group is ``otherix`` at the
  root of each. QEMU outlives the agent, so its group is not under the agent's own
  (a service manager that stops the agent's group would take the VMs with it);
- ``none`` with the reason otherwise (no such hierarchy, or the parent cannot be made).

``CgroupSupport.place(pid, vm_id, memory_mb, vcpus)`` makes the VM's group(s) ``vm_id``
under the parent(s), writes the limits and moves ``pid`` in; it answers a
:class:`Placement` whose ``limits`` is what ``ObservedVm.limits`` shows, and never
raises for a cgroup that cannot be written: the failure is in ``limits``
(``none: ...``) and logged. Memory: ``memory_mb`` MiB plus :data:`QEMU_OVERHEAD_MB`
(QEMU's own code, TCG translation cache, device buffers, which are charged to the group
as well as guest RAM). CPU: ``vcpus`` CPUs of quota per 100 ms period.
``CgroupSupport.remove(vm_id)`` removes the group(s) once QEMU has exited; a group that
still has processes cannot be removed and is reported (the answer, and the log).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["QEMU_OVERHEAD_MB", "CgroupSupport", "Placement", "detect"]

log = logging.getLogger(__name__)

Mode = Literal["v2", "v1", "none"]

QEMU_OVERHEAD_MB = 256
CPU_PERIOD_US = 100_000
PARENT = "otherix"
ROOT = Path("/sys/fs/cgroup")
_MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Placement:
    limits: str  # "cgroup v1: memory 64 MiB (+256 MiB for QEMU), cpu 1" or "none: <why>"
    placed: bool


def _write(path: Path, text: str) -> None:
    # a cgroup control file: one write(2), no temp file (cgroupfs has no rename)
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc)


@dataclass(frozen=True, slots=True)
class CgroupSupport:
    mode: Mode
    reason: str | None = None  # why "none"
    memory_parent: Path | None = None  # v2: the one parent group, also cpu_parent
    cpu_parent: Path | None = None

    def _groups(self, vm_id: str) -> tuple[Path, ...]:
        parents = {p for p in (self.memory_parent, self.cpu_parent) if p is not None}
        return tuple(sorted(parent / vm_id for parent in parents))

    def place(self, pid: int, vm_id: str, memory_mb: int, vcpus: int) -> Placement:
        """Put ``pid`` in the VM's group(s) with its limits (best effort, reported)."""
        if self.mode == "none" or self.memory_parent is None or self.cpu_parent is None:
            return Placement(f"none: {self.reason}", False)
        if "/" in vm_id or vm_id in ("", ".", ".."):
            return Placement(f"none: {vm_id!r} is not a cgroup name", False)
        limit = (memory_mb + QEMU_OVERHEAD_MB) * _MiB
        quota = vcpus * CPU_PERIOD_US
        mem, cpu = self.memory_parent / vm_id, self.cpu_parent / vm_id
        try:
            for group in self._groups(vm_id):
                group.mkdir(exist_ok=True)
            if self.mode == "v2":
                _write(mem / "memory.max", str(limit))
                _write(cpu / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            else:
                _write(mem / "memory.limit_in_bytes", str(limit))
                _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(cpu / "cpu.cfs_quota_us", str(quota))
            for group in self._groups(vm_id):
                _write(group / "cgroup.procs", str(pid))
        except OSError as exc:
            why = f"cannot place QEMU (pid {pid}) in its cgroup: {_reason(exc)}"
            log.warning("vm %s: %s", vm_id, why)
            left = self.remove(vm_id)
            return Placement(f"none: {why}" + (f"; {left}" if left else ""), False)
        return Placement(
            f"cgroup {self.mode}: memory {memory_mb} MiB (+{QEMU_OVERHEAD_MB} MiB for QEMU),"
            f" cpu {vcpus}",
            True,
        )

    def remove(self, vm_id: str, timeout: float = 1.0) -> str | None:
        """Remove the VM's group(s) (after QEMU exited); what could not be removed, or
        None. An exiting QEMU may take a moment to leave its group: EBUSY is retried
        for ``timeout`` seconds."""
        if self.mode == "none" or "/" in vm_id or vm_id in ("", ".", ".."):
            return None
        problems: list[str] = []
        for group in self._groups(vm_id):
            deadline = time.monotonic() + timeout
            while True:
                try:
                    group.rmdir()
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(0.02)
                        continue
                    problems.append(f"cannot remove cgroup {group}: {_reason(exc)}")
                    break
                break
        if problems:
            log.warning("vm %s: %s", vm_id, "; ".join(problems))
            return "; ".join(problems)
        return None


def _make_parent(base: Path, name: str) -> Path:
    parent = base / name
    parent.mkdir(exist_ok=True)
    return parent


def _v2(root: Path, name: str) -> CgroupSupport:
    try:
        parent = _make_parent(root, name)
        _write(root / "cgroup.subtree_control", "+memory +cpu")
        _write(parent / "cgroup.subtree_control", "+memory +cpu")
    except OSError as exc:
        return CgroupSupport("none", f"cgroup v2 is not writable here: {_reason(exc)}")
    return CgroupSupport("v2", None, parent, parent)


def _v1(root: Path, name: str) -> CgroupSupport:
    memory = root / "memory"
    cpu = next((root / n for n in ("cpu,cpuacct", "cpu") if (root / n).is_dir()), None)
    if not (memory / "memory.limit_in_bytes").is_file():
        return CgroupSupport("none", f"no cgroup v2 with memory and cpu, no v1 {memory}")
    if cpu is None or not (cpu / "cpu.cfs_quota_us").is_file():
        return CgroupSupport("none", f"no cgroup v1 cpu hierarchy with quotas under {root}")
    try:
        mem_parent = _make_parent(memory, name)
        cpu_parent = _make_parent(cpu, name)
    except OSError as exc:
        return CgroupSupport("none", f"cgroup v1 is not writable here: {_reason(exc)}")
    return CgroupSupport("v1", None, mem_parent, cpu_parent)


def detect(root: Path = ROOT, parent: str = PARENT) -> CgroupSupport:
    """What this node can limit VMs with; makes the agent's parent group(s), named
    ``parent`` (tests use a name of their own)."""
    try:
        controllers = (root / "cgroup.controllers").read_text().split()
    except OSError:
        controllers = []
    if {"memory", "cpu"} <= set(controllers):
        return _v2(root, parent)
    return _v1(root, parent)
