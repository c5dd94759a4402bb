"""VM presentation for the CLI (docs/pool-contract.md §7, §11, §12).

Owns how VMs look to an operator: the phase wording (``stopped`` means the
disk is ready), the ``vm list`` table, the ``vm get`` and ``vm create`` text
layouts (disks with their pool and size), and the ``-o yaml`` projection
into an apply-ready ``VM`` manifest. The ``vm`` command module calls these
with bodies exactly as the REST API returns them; nothing here does I/O.

Choices docs/pool-contract.md leaves open (documented, tested):

- A VM whose root disk is missing (its pool failed, or the file is gone)
  keeps phase ``stopped`` and shows ``disk_missing`` in the ``REASON`` column
  of ``vm list``; ``vm get`` reads ``phase: stopped (disk missing: …)``
  instead of ``stopped (disk ready)``, and the disk line says ``MISSING``.
- A VM not placed yet shows ``-`` as its node (``- (requested node-b)``
  in ``vm get`` when it carries a node hint).
- The manifest's ``spec.node`` is the node the VM *asked* for (the hint),
  not where it landed: re-applying it must not pin a VM the scheduler was
  free to place. ``spec.pool`` is the pool hosting the root disk (the
  requested pool until placed). Empty fields (null, ``""``, ``diskGiB: 0``
  meaning "the image's size") are left out; ids, owner, status and
  timestamps never appear.
- Timestamps in the text views are printed as the server sent them.

- ``vm list`` has a ``STATE`` column (the power state the node last
  observed; ``-`` while the disk is not ready) beside ``PHASE`` (the disk's
  lifecycle: ``stopped`` means the disk is ready, whether QEMU runs or not).
  ``vm get`` adds ``state:`` (pid, accelerator and uptime while running;
  QEMU's words when crashed or failed; when the restart policy restarts
  it), the desired ``power_state`` and the ``restart_policy``.

Every text function returns whole lines ending in a newline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from otherix.cli.output import age, human_bytes, render_table

__all__ = [
    "created_text",
    "failure_reason",
    "list_manifests",
    "phase_text",
    "printable",
    "state_text",
    "vm_list_table",
    "vm_manifest",
    "vm_text",
]

VM = Mapping[str, Any]

API_VERSION = "otherix/v1"
KIND = "VM"
NOT_PLACED = "-"

_LIST_HEADERS = ("NAME", "POOL", "NODE", "PHASE", "STATE", "REASON", "AGE")


def _status(vm: VM) -> Mapping[str, Any]:
    return vm.get("status") or {}


def failure_reason(vm: VM) -> str:
    """``<reason>: <message>`` from ``status`` (either part may be missing)."""
    status = _status(vm)
    parts = [str(p) for p in (status.get("reason"), status.get("message")) if p]
    return ": ".join(parts)


def phase_text(vm: VM) -> str:
    """The phase as an operator reads it.

    ``stopped (disk ready)``; ``pending (<reason>: <message>)`` while the
    scheduler cannot place it; ``error (<reason>: <message>)``; else the
    bare phase.
    """
    phase = str(_status(vm).get("phase") or "unknown")
    if phase == "stopped" and _status(vm).get("reason") == "disk_missing":
        return f"stopped (disk missing: {_status(vm).get('message') or 'see the disks'})"
    if phase == "stopped":
        return "stopped (disk ready)"
    why = failure_reason(vm)
    if phase in ("pending", "error") and why:
        return f"{phase} ({why})"
    return phase


def _node(vm: VM) -> str:
    return str(vm.get("node") or NOT_PLACED)


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Guest console text made safe for an operator's terminal: every control character
    but tab (an escape sequence could retitle, recolour or write the clipboard) shown
    as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _uptime(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def state_text(vm: VM) -> str:
    """The power state as ``vm get`` prints it: ``running (pid 4242, tcg, up 3m2s)``,
    ``crashed (exit status -9: killed by signal 9; restart 2 at ...)``, ``-`` before the
    disk is ready."""
    status = _status(vm)
    state = status.get("state")
    if not state:
        return NOT_PLACED
    rt = status.get("runtime") or {}
    parts: list[str] = []
    if state in ("starting", "running", "stopping"):
        if rt.get("pid"):
            parts.append(f"pid {rt['pid']}")
        if rt.get("accelerator"):
            parts.append(str(rt["accelerator"]))
        if rt.get("uptime_seconds") is not None:
            parts.append(f"up {_uptime(int(rt['uptime_seconds']))}")
    elif state in ("crashed", "failed") and rt.get("detail"):
        parts.append(str(rt["detail"]))
    if rt.get("next_restart_at"):
        parts.append(f"restarting at {rt['next_restart_at']}")
    return f"{state} ({', '.join(parts)})" if parts else str(state)


def vm_list_table(vms: Sequence[VM], now: datetime, show_ids: bool) -> str:
    """Render ``vm list``: ``NAME POOL NODE PHASE REASON AGE`` (``ID`` first with ids)."""
    headers = ("ID", *_LIST_HEADERS) if show_ids else _LIST_HEADERS
    rows: list[list[str]] = []
    for vm in vms:
        row = [
            str(vm.get("name", "")),
            str(vm.get("pool") or "-"),
            _node(vm),
            str(_status(vm).get("phase") or ""),
            str(_status(vm).get("state") or NOT_PLACED),
            str(_status(vm).get("reason") or ""),
            age(vm.get("created_at"), now),
        ]
        rows.append([str(vm.get("id", "")), *row] if show_ids else row)
    return render_table(headers, rows)


def _disk_size(disk: Mapping[str, Any]) -> str:
    if disk.get("size_gib"):
        return f"{disk['size_gib']}GiB"
    if disk.get("virtual_size_bytes") is not None:
        return human_bytes(disk["virtual_size_bytes"])
    return "image size"


def _disk_lines(disks: Sequence[Mapping[str, Any]]) -> list[str]:
    if not disks:
        return ["disks: <none>"]
    lines = ["disks:"]
    for disk in disks:
        line = f"  - pool {disk.get('pool', '')}, {_disk_size(disk)}, {disk.get('format')}"
        if disk.get("missing"):
            line += f" MISSING ({disk.get('missing_reason') or 'unknown'})"
        lines.append(line)
        if disk.get("virtual_size_bytes") is not None:
            lines.append(f"    virtual_size: {human_bytes(disk['virtual_size_bytes'])}")
        if disk.get("actual_size_bytes") is not None:
            lines.append(f"    allocated: {human_bytes(disk['actual_size_bytes'])}")
        if disk.get("file_path"):
            lines.append(f"    path: {disk['file_path']}")
    return lines


def vm_text(vm: VM) -> str:
    """Render ``vm get NAME`` as ``key: value`` lines, then the disks."""
    disk_gib = vm.get("disk_gib") or 0
    node = _node(vm)
    if not vm.get("node") and vm.get("node_hint"):
        node += f" (requested {vm['node_hint']})"
    lines = [
        f"name: {vm.get('name', '')}",
        f"id: {vm.get('id', '')}",
        f"owner: {vm.get('owner', '')}",
        f"image_url: {vm.get('image_url') or ''}",
    ]
    if vm.get("image_sha256"):
        lines.append(f"image_sha256: {vm['image_sha256']}")
    lines += [
        f"pull_policy: {vm.get('pull_policy', '')}",
        f"arch: {vm.get('architecture') or ''}",
        f"vcpus: {vm.get('vcpus')}",
        f"memory_mb: {vm.get('memory_mb')}",
        f"format: {vm.get('format', '')}",
        f"disk_gib: {disk_gib}" + ("" if disk_gib else " (the image's virtual size)"),
        f"pool: {vm.get('pool') or '-'}",
        f"node: {node}",
        f"phase: {phase_text(vm)}",
        f"state: {state_text(vm)}",
        f"power_state: {vm.get('power_state') or 'running'} (desired)",
        f"restart_policy: {vm.get('restart_policy') or 'on-failure'}",
    ]
    rt = _status(vm).get("runtime") or {}
    if rt.get("restarts"):
        lines.append(f"restarts: {rt['restarts']}")
    if rt.get("limits"):
        lines.append(f"limits: {rt['limits']}")
    if _status(vm).get("task_id"):
        lines.append(f"task: {_status(vm)['task_id']}")
    if rt.get("console_tail"):
        lines.append("last console lines:")
        lines += [f"  {printable(line)}" for line in rt["console_tail"]]
    lines += _disk_lines(vm.get("disks") or [])
    lines.append(f"created_at: {vm.get('created_at', '')}")
    lines.append(f"updated_at: {vm.get('updated_at', '')}")
    return "".join(f"{line}\n" for line in lines)


def created_text(vm: VM) -> str:
    """Render ``vm create``: what was admitted and where it stands."""
    lines = [
        f"vm {vm.get('name', '')} created",
        f"pool: {vm.get('pool') or '-'}",
        f"node: {_node(vm)}",
        f"phase: {phase_text(vm)}",
    ]
    state = _status(vm).get("state")
    if state:  # bare: a create prints what it left, not a moving uptime
        detail = (_status(vm).get("runtime") or {}).get("detail")
        lines.append(f"state: {state} ({detail})" if detail else f"state: {state}")
    return "".join(f"{line}\n" for line in lines)


def vm_manifest(vm: VM) -> dict[str, Any]:
    """Project a VM body into an apply-ready ``VM`` manifest (empty fields left out)."""
    spec = {
        "imageURL": vm.get("image_url"),
        "imageSHA256": vm.get("image_sha256"),
        "imagePullPolicy": vm.get("pull_policy"),
        "arch": vm.get("architecture"),
        "vcpus": vm.get("vcpus"),
        "memoryMB": vm.get("memory_mb"),
        "format": vm.get("format"),
        "diskGiB": vm.get("disk_gib"),
        "pool": vm.get("pool"),
        "node": vm.get("node_hint"),
        # the defaults (running, on-failure) are left out like other defaults
        "powerState": None if vm.get("power_state") == "running" else vm.get("power_state"),
        "restartPolicy": None
        if vm.get("restart_policy") == "on-failure"
        else vm.get("restart_policy"),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": str(vm.get("name", ""))},
        "spec": {key: value for key, value in spec.items() if value not in (None, "", 0)},
    }


def list_manifests(vms: Sequence[VM]) -> list[dict[str, Any]]:
    """Project ``vm list`` rows, one manifest each."""
    return [vm_manifest(vm) for vm in vms]
