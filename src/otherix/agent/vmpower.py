"""The work of a power task (``vm.start``, ``vm.stop``, ``vm.restart``, ``vm.poweroff``)
and of the start at the end of a ``vm.create``: arguments, pool, disk, runtime.

Called by the VM task workers (``otherix.agent.vmtasks``) in a worker thread. Knows
nothing of threads or reports: it parses the task's arguments, finds the VM's disk on
this host (the pool must be registered and ready at its declared path:
``PoolState.resolve``; the disk is ``{pool}/vms/{vm_id}/disk.{format}``, derived from
the registry and the VM id, never from a path the task names) and drives the runtime
(``otherix.agent.vms``). Every failure leaves as a ``vmwork.TaskFailure``.

Args: ``{vm_id, name, pool_name, pool_path, format, vcpus, memory_mb, restart_policy,
timeout_seconds}``. Result: the VM as observed afterwards
(``models.heartbeat.VmObservation``, JSON).

Error codes: ``pool_not_ready`` (the pool is not registered and ready here: failed, or
not at that path), ``disk_missing`` (no disk file), ``vm_start_failed`` (QEMU did not
come up: its own message, e.g. a corrupt disk or memory the node does not have),
``vm_unavailable`` (this agent has no VM runtime: QEMU not installed),
``validation_failed``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from otherix.agent.images.disks import canonical_vm_id
from otherix.agent.pools import PoolUnknownError
from otherix.agent.vms.command import Accel, DiskFormat, RestartPolicy, VmLaunch
from otherix.agent.vms.observed import UnknownVm
from otherix.agent.vms.supervisor import VmSupervisor
from otherix.agent.vmwork import PoolResolver, TaskFailure

__all__ = [
    "POWER_TYPES",
    "VM_POWEROFF",
    "VM_RESTART",
    "VM_START",
    "VM_STOP",
    "PowerArgs",
    "VmHost",
    "run",
    "start_after_create",
]

VM_START: Final = "vm.start"
VM_STOP: Final = "vm.stop"
VM_RESTART: Final = "vm.restart"
VM_POWEROFF: Final = "vm.poweroff"
POWER_TYPES: Final = frozenset({VM_START, VM_STOP, VM_RESTART, VM_POWEROFF})
_POLICIES: Final = ("always", "on-failure", "never")


@dataclass(frozen=True)
class VmHost:
    """What this node runs VMs with: the supervisor (over the runtime), the accelerator
    ``accel.probe`` chose, and the QEMU binary."""

    supervisor: VmSupervisor
    accel: Accel
    qemu_binary: str


def _invalid(message: str) -> TaskFailure:
    return TaskFailure("validation_failed", message)


def _int(args: Mapping[str, Any], key: str, low: int, high: int, default: int) -> int:
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"task argument {key} must be an integer from {low} to {high}")
    return value


def _text(args: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = args.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _invalid(f"task argument {key} must be a non-empty string")
    return value


@dataclass(frozen=True)
class PowerArgs:
    vm_id: str
    name: str
    pool_name: str | None
    pool_path: str | None
    format: DiskFormat
    vcpus: int
    memory_mb: int
    restart_policy: RestartPolicy
    timeout: float

    @classmethod
    def parse(cls, args: Mapping[str, Any]) -> PowerArgs:
        try:
            vm_id = canonical_vm_id(str(args.get("vm_id")))
        except ValueError as exc:
            raise _invalid(str(exc)) from None
        fmt = args.get("format") or "qcow2"
        if fmt not in ("qcow2", "raw"):
            raise _invalid(f"task argument format must be qcow2 or raw, got {fmt!r}")
        policy = args.get("restart_policy") or "on-failure"
        if policy not in _POLICIES:
            raise _invalid(f"task argument restart_policy must be one of {', '.join(_POLICIES)}")
        return cls(
            vm_id=vm_id,
            name=_text(args, "name") or "",
            pool_name=_text(args, "pool_name", optional=True),
            pool_path=_text(args, "pool_path", optional=True),
            format="raw" if fmt == "raw" else "qcow2",
            vcpus=_int(args, "vcpus", 1, 1024, 1),
            memory_mb=_int(args, "memory_mb", 16, 16 * 1024 * 1024, 256),
            restart_policy="always"
            if policy == "always"
            else "never"
            if policy == "never"
            else "on-failure",
            timeout=float(_int(args, "timeout_seconds", 1, 3600, 60)),
        )


def launch_of(pools: PoolResolver, host: VmHost, args: PowerArgs) -> VmLaunch:
    """The launch of the VM's disk on this node; ``pool_not_ready`` / ``disk_missing``."""
    if args.pool_name is None:
        raise TaskFailure("disk_missing", f"VM {args.name} has no disk on this node")
    try:
        root = pools.resolve(args.pool_name, args.pool_path)
    except PoolUnknownError as exc:
        raise TaskFailure(
            "pool_not_ready", f'pool "{args.pool_name}" is not ready on this node: {exc}'
        ) from None
    vm_dir = root / "vms" / args.vm_id
    disk = vm_dir / f"disk.{args.format}"
    try:
        st = os.lstat(disk)
    except FileNotFoundError:
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise TaskFailure(
            "disk_missing", f'the disk of VM {args.name} is missing from pool "{args.pool_name}"'
        )
    return VmLaunch(
        vm_id=args.vm_id,
        name=args.name,
        disk_path=disk,
        disk_format=args.format,
        vcpus=args.vcpus,
        memory_mb=args.memory_mb,
        accel=host.accel,
        vm_dir=vm_dir,
        qemu_binary=host.qemu_binary,
        restart_policy=args.restart_policy,
    )


def _start(pools: PoolResolver, host: VmHost, args: PowerArgs) -> dict[str, Any]:
    sup = host.supervisor
    launch = launch_of(pools, host, args)
    sup.asked(args.vm_id)
    obs = sup.runtime.start(launch)
    report = sup.observe(args.vm_id)
    if obs.state != "running":
        raise TaskFailure(
            "vm_start_failed",
            obs.detail or f"QEMU did not start ({obs.state})",
            details={"state": obs.state},
        )
    return report.model_dump(mode="json")


#: why a node without a VM host runs no VMs, unless the agent says more (``node get``)
NO_VMS = "this node runs no VMs (QEMU is not installed, or vms.enabled is false)"


def run(
    pools: PoolResolver,
    host: VmHost | None,
    task_type: str,
    args: PowerArgs,
    *,
    unavailable: str = NO_VMS,
) -> dict[str, Any]:
    """Run one power task; its result (the VM as observed after). ``unavailable``: what
    a node without a VM host says."""
    if host is None:
        raise TaskFailure("vm_unavailable", unavailable)
    sup = host.supervisor
    runtime = sup.runtime
    if task_type in (VM_START, VM_RESTART) and not runtime.alive(args.vm_id):
        return _start(pools, host, args)
    if task_type == VM_START:  # already running: nothing to do
        return sup.observe(args.vm_id).model_dump(mode="json")
    try:
        if task_type == VM_STOP:
            runtime.stop(args.vm_id, args.timeout)
        elif task_type == VM_POWEROFF:
            runtime.poweroff(args.vm_id)
        else:  # restart: stop, then start from the disk as it is now
            runtime.stop(args.vm_id, args.timeout)
            return _start(pools, host, args)
    except UnknownVm:  # never started on this node: it is stopped already
        return {"id": args.vm_id, "state": "stopped"}
    return sup.observe(args.vm_id).model_dump(mode="json")


def start_after_create(
    pools: PoolResolver, host: VmHost | None, args: Mapping[str, Any], *, unavailable: str = NO_VMS
) -> dict[str, Any]:
    """The start at the end of a ``vm.create`` whose VM should run: the VM as observed.
    Never raises: a start that fails leaves the disk made and says why (``state:
    failed``, ``detail``), and the create still succeeds."""
    try:
        parsed = PowerArgs.parse(args)
        return run(pools, host, VM_START, parsed, unavailable=unavailable)
    except TaskFailure as exc:
        return {"id": str(args.get("vm_id")), "state": "failed", "detail": exc.message}
