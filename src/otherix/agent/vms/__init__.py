"""The agent's VM runtime: each VM a ``qemu-system-x86_64`` process (a library).

``runtime.VmRuntime`` starts, stops, observes and re-attaches to QEMUs, and reports each
VM as an ``observed.ObservedVm``; ``command`` builds the QEMU command line from a
``VmLaunch``; ``accel`` decides KVM or TCG for the node; ``cgroups`` puts each QEMU in a
cgroup of its own with its memory and CPU limits where the node allows it; ``console``
bounds the serial log and tails it; ``process`` tells a live QEMU of ours from a reused
pid; ``record`` is each VM's state file; ``qmp`` is the synchronous facade over the
``qemu.qmp`` library. No networking yet. Not wired into the daemon yet: the agent's VM
tasks will call it. See docs/vm-runtime.md.
"""

from otherix.agent.vms.accel import AccelProbe, probe
from otherix.agent.vms.command import RunPaths, VmLaunch, qemu_command
from otherix.agent.vms.observed import ObservedVm, UnknownVm, VmState
from otherix.agent.vms.runtime import VmRuntime

__all__ = [
    "AccelProbe",
    "ObservedVm",
    "RunPaths",
    "UnknownVm",
    "VmLaunch",
    "VmRuntime",
    "VmState",
    "probe",
    "qemu_command",
]
