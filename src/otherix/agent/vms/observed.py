"""What the runtime reports of a VM: :class:`ObservedVm`, its :data:`VmState`, and
:class:`UnknownVm` for a VM the runtime has never started or attached to.

Built by ``otherix.agent.vms.runtime.VmRuntime.state``; the agent's VM tasks (later)
turn it into what the node reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from otherix.agent.vms.command import Accel

__all__ = ["ObservedVm", "UnknownVm", "VmState"]

VmState = Literal["starting", "running", "stopping", "stopped", "crashed", "failed"]


class UnknownVm(LookupError):
    """The runtime has never started or attached to this VM."""


@dataclass(frozen=True, slots=True)
class ObservedVm:
    vm_id: str
    state: VmState
    pid: int | None = None
    accel: Accel | None = None
    uptime_s: float | None = None
    exit_status: int | None = None
    detail: str | None = None  # exit status in words, or QEMU's message when failed
    console: tuple[str, ...] = ()
    # the resource limits QEMU runs under: "cgroup v1: memory 512 MiB (+256 MiB for
    # QEMU), cpu 1", or "none: <why>" (agent/vms/cgroups.py); None: QEMU never ran
    limits: str | None = None
    #: wall-clock start of the QEMU (``time.time()``), None when it never ran
    started_at: float | None = None
    #: a stop or power-off was asked for (so an exit is not the restart policy's business)
    stop_asked: bool = False
