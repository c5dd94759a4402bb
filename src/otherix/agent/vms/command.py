"""The QEMU command line of one VM, built from a frozen :class:`VmLaunch` (pure, no I/O).

``VmLaunch`` is what the runtime (``otherix.agent.vms.runtime``) is handed to start a VM:
the VM's id and name, its disk on the pool (path and format), ``vcpus``, ``memory_mb``,
the accelerator (``accel.probe``'s answer) and the VM's directory on the pool, where the
serial console log lives. ``RunPaths`` names the files of one VM in the agent's run
directory (QMP socket, pidfile, state file, QEMU's stderr, the start lock).

``qemu_command(launch, paths)`` is the argv: a q35 machine with no default devices, no
display and no network (``-nic none``), the disk as virtio-blk (``-blockdev`` in JSON, so
no path needs comma escaping; host page cache on, which works on tmpfs too), the first
serial port appended to ``console.log`` in the VM's directory, QMP on a unix socket that
QEMU listens on, and a pidfile. No ``-daemonize``: the runtime starts QEMU in its own
session, so it outlives the agent, and stays its parent while the agent lives (exit
status). No ``-no-shutdown``: a guest that powers off makes QEMU exit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "CONSOLE_LOG",
    "QEMU_BINARY",
    "Accel",
    "DiskFormat",
    "RestartPolicy",
    "RunPaths",
    "VmLaunch",
    "qemu_command",
]

QEMU_BINARY = "qemu-system-x86_64"
CONSOLE_LOG = "console.log"
# sun_path is 108 bytes with its NUL
_MAX_SOCKET_PATH = 107

Accel = Literal["kvm", "tcg"]
DiskFormat = Literal["qcow2", "raw"]
#: what the agent's supervisor does when QEMU ends unasked (``agent/vms/supervisor.py``)
RestartPolicy = Literal["always", "on-failure", "never"]


@dataclass(frozen=True, slots=True)
class VmLaunch:
    """Everything needed to start one VM's QEMU."""

    vm_id: str
    name: str
    disk_path: Path
    disk_format: DiskFormat
    vcpus: int
    memory_mb: int
    accel: Accel
    vm_dir: Path  # the VM's directory on the pool: the console log goes here
    qemu_binary: str = QEMU_BINARY
    restart_policy: RestartPolicy = "on-failure"  # not part of the command line

    @property
    def console_log(self) -> Path:
        return self.vm_dir / CONSOLE_LOG


@dataclass(frozen=True, slots=True)
class RunPaths:
    """The files of one VM in the agent's run directory: ``<run_dir>/<vm_id>/``."""

    directory: Path

    @property
    def qmp_socket(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    @property
    def stderr_log(self) -> Path:
        return self.directory / "qemu.stderr"

    @property
    def lock_file(self) -> Path:
        return self.directory / "lock"


def _opt(value: str) -> str:
    """A value inside a QEMU ``-chardev``/``-name`` option list: a comma is doubled."""
    return value.replace(",", ",,")


def qemu_command(launch: VmLaunch, paths: RunPaths) -> list[str]:
    """The argv that starts ``launch`` (raises ValueError on a value QEMU cannot take)."""
    if launch.vcpus < 1:
        raise ValueError(f"vcpus must be at least 1, not {launch.vcpus}")
    if launch.memory_mb < 1:
        raise ValueError(f"memory_mb must be at least 1, not {launch.memory_mb}")
    for path in (launch.disk_path, launch.vm_dir, paths.directory):
        if not path.is_absolute():
            raise ValueError(f"{path} is not an absolute path")
    socket = str(paths.qmp_socket)
    if len(socket.encode()) > _MAX_SOCKET_PATH:
        raise ValueError(
            f"QMP socket path {socket} is longer than {_MAX_SOCKET_PATH} bytes: "
            "use a shorter run directory"
        )
    blockdev = {
        "driver": launch.disk_format,
        "node-name": "root",
        "cache": {"direct": False, "no-flush": False},
        "discard": "unmap",
        "file": {"driver": "file", "filename": str(launch.disk_path)},
    }
    argv = [
        launch.qemu_binary,
        "-name",
        f"guest={_opt(launch.name)}",
        "-machine",
        "q35",
        "-accel",
        launch.accel,
    ]
    if launch.accel == "kvm":
        argv += ["-cpu", "host"]
    argv += [
        "-smp",
        str(launch.vcpus),
        "-m",
        str(launch.memory_mb),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-nic",
        "none",
        "-blockdev",
        json.dumps(blockdev, separators=(",", ":")),
        "-device",
        "virtio-blk-pci,drive=root,bootindex=0",
        "-chardev",
        f"file,id=console,path={_opt(str(launch.console_log))},append=on",
        "-serial",
        "chardev:console",
        "-chardev",
        f"socket,id=qmp,path={_opt(socket)},server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
        "-pidfile",
        str(paths.pidfile),
    ]
    return argv
