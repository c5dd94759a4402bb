"""The state file of one VM in the agent's run directory (``<run_dir>/<vm_id>/state.json``).

What a restarted agent needs to find a VM's QEMU again and to report it honestly: the
``VmLaunch`` it was started from, the QEMU's :class:`~otherix.agent.vms.process.Identity`,
the wall-clock start, whether a stop was asked for (a QEMU that exits after that is
``stopped``, not ``crashed``, even when the agent was down meanwhile), the cgroup
limits it runs under (``agent/vms/cgroups.py``) and, once it is over, how it ended
(``Outcome``). Written atomically by the runtime
(``otherix.agent.fs.atomic_write``); an unreadable file reads as None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from otherix.agent.fs import atomic_write
from otherix.agent.vms.command import Accel, DiskFormat, RestartPolicy, VmLaunch
from otherix.agent.vms.process import Identity

__all__ = ["Outcome", "VmRecord", "load", "save"]

Ended = Literal["stopped", "crashed", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    state: Ended
    exit_status: int | None
    detail: str  # exit status in words, or QEMU's own message when failed


@dataclass(frozen=True, slots=True)
class VmRecord:
    launch: VmLaunch
    identity: Identity | None  # None: QEMU never ran (failed before its first breath)
    started_at: float
    stopping: bool = False
    outcome: Outcome | None = None
    limits: str | None = None  # ObservedVm.limits: the cgroup limits QEMU runs under

    def with_(self, *, stopping: bool | None = None, outcome: Outcome | None = None) -> VmRecord:
        return replace(
            self,
            stopping=self.stopping if stopping is None else stopping,
            outcome=outcome if outcome is not None else self.outcome,
        )


def _encode(record: VmRecord) -> bytes:
    launch = record.launch
    doc = {
        "launch": {
            "vm_id": launch.vm_id,
            "name": launch.name,
            "disk_path": str(launch.disk_path),
            "disk_format": launch.disk_format,
            "vcpus": launch.vcpus,
            "memory_mb": launch.memory_mb,
            "accel": launch.accel,
            "vm_dir": str(launch.vm_dir),
            "qemu_binary": launch.qemu_binary,
            "restart_policy": launch.restart_policy,
        },
        "identity": None
        if record.identity is None
        else {
            "pid": record.identity.pid,
            "start_time": record.identity.start_time,
            "cmdline": list(record.identity.cmdline),
        },
        "started_at": record.started_at,
        "stopping": record.stopping,
        "limits": record.limits,
        "outcome": None
        if record.outcome is None
        else {
            "state": record.outcome.state,
            "exit_status": record.outcome.exit_status,
            "detail": record.outcome.detail,
        },
    }
    return json.dumps(doc, indent=2).encode() + b"\n"


def _accel(value: object) -> Accel:
    if value == "kvm":
        return "kvm"
    if value == "tcg":
        return "tcg"
    raise ValueError(f"accel {value!r}")


def _format(value: object) -> DiskFormat:
    if value == "qcow2":
        return "qcow2"
    if value == "raw":
        return "raw"
    raise ValueError(f"disk format {value!r}")


def _policy(value: object) -> RestartPolicy:
    """A file written before restart policies reads as the default, ``on-failure``."""
    if value == "always":
        return "always"
    if value == "never":
        return "never"
    if value == "on-failure":
        return "on-failure"
    raise ValueError(f"restart policy {value!r}")


def _ended(value: object) -> Ended:
    if value == "stopped":
        return "stopped"
    if value == "crashed":
        return "crashed"
    if value == "failed":
        return "failed"
    raise ValueError(f"outcome {value!r}")


def _decode(doc: dict[str, object]) -> VmRecord:
    la = doc["launch"]
    ident = doc["identity"]
    out = doc["outcome"]
    if not isinstance(la, dict):
        raise ValueError("launch is not an object")
    launch = VmLaunch(
        vm_id=str(la["vm_id"]),
        name=str(la["name"]),
        disk_path=Path(str(la["disk_path"])),
        disk_format=_format(la["disk_format"]),
        vcpus=int(la["vcpus"]),
        memory_mb=int(la["memory_mb"]),
        accel=_accel(la["accel"]),
        vm_dir=Path(str(la["vm_dir"])),
        qemu_binary=str(la["qemu_binary"]),
        restart_policy=_policy(la.get("restart_policy", "on-failure")),
    )
    identity = None
    if isinstance(ident, dict):
        identity = Identity(
            pid=int(ident["pid"]),
            start_time=int(ident["start_time"]),
            cmdline=tuple(str(part) for part in ident["cmdline"]),
        )
    outcome = None
    if isinstance(out, dict):
        status = out["exit_status"]
        outcome = Outcome(
            state=_ended(out["state"]),
            exit_status=None if status is None else int(status),
            detail=str(out["detail"]),
        )
    started_at = doc["started_at"]
    if not isinstance(started_at, int | float):
        raise ValueError("started_at is not a number")
    limits = doc.get("limits")  # absent in files written before resource limits
    return VmRecord(
        launch,
        identity,
        float(started_at),
        bool(doc["stopping"]),
        outcome,
        None if limits is None else str(limits),
    )


def save(path: Path, record: VmRecord) -> None:
    atomic_write(path, _encode(record), mode=0o600)


def load(path: Path) -> VmRecord | None:
    """The record at ``path``; None when it is missing or not one this module wrote."""
    try:
        doc = json.loads(path.read_bytes())
        if not isinstance(doc, dict):
            return None
        return _decode(doc)
    except (OSError, ValueError, KeyError, TypeError):
        return None
