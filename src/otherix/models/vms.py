"""Wire models for VMs and their disks (docs/pool-contract.md §7), and the pure VM rules.

Owns: ``VMCreate`` (the ``POST /v1/vms`` body), the ``VM`` read model with its
``VMStatus`` and ``VmDisk`` rows, the phase and pull-policy vocabularies, the
syntax checks the API applies to a VM name and an image URL, and ``decide``,
the pure placement decision (docs/pool-contract.md §7.2, below). Called by the API's VM
services, routes and scheduler, and by clients that parse VM answers.

Phases (``status.phase``):

- ``pending``: admitted; not placed yet (``status.reason``/``message`` say
  why, see docs/pool-contract.md §7.2), or placed with its ``vm.create`` task not started.
- ``creating``: the node's agent is running the ``vm.create`` task (image
  cache fill, disk materialisation); progress is on the task.
- ``stopped``: the disk is ready. Booting under QEMU is a later stage, so a
  VM whose disk is ready reports ``stopped``.
- ``error``: a task failed; ``status.reason`` is the task's error code (e.g.
  ``checksum_mismatch``, ``image_collision``, ``pool_full``,
  ``disk_too_small``, ``download_failed``).
- ``deleting``: a ``vm.delete`` task is removing the disk; when it succeeds
  the VM is gone (its row is removed).

A made disk (its ``file_path`` known) is *missing* (``disk_missing``, pure)
when its pool is reconciled ``failed`` (``pool_failed``: its directory,
marker or device is gone, docs/architecture.md "Pool identity") or the
agent reports the file gone (``file_missing``). The disk row says so
(``missing``, ``missing_reason``, ``missing_since``), and a ``stopped`` VM
whose root disk is missing shows ``status.reason: "disk_missing"`` with a
message and ``details``; its phase stays ``stopped`` (the lifecycle did not
change, and list filters by phase keep matching it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, StrictInt, StrictStr

from otherix.models.common import Input, Output, Page
from otherix.models.validation import image_basename

VmPhase = Literal["pending", "creating", "stopped", "error", "deleting"]
#: Why a made disk is missing (``disk_missing``).
MissingReason = Literal["pool_failed", "file_missing"]
PullPolicy = Literal["if-not-present", "always"]
DiskFormat = Literal["qcow2", "raw"]
Architecture = Literal["amd64", "arm64"]

MAX_VM_NAME_CHARS = 253
MAX_IMAGE_URL_CHARS = 2048
MAX_DISK_GIB = 65536
_VM_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", re.ASCII)


class VMCreate(Input):
    """``POST /v1/vms``. ``pool`` is a pool name or an instance UUID (default: the
    cluster default pool); ``node`` is a node-name hint (a UUID is refused)."""

    name: StrictStr
    image_url: StrictStr
    image_sha256: StrictStr | None = Field(
        default=None, description="expected sha256 of the image, 64 hex digits"
    )
    pull_policy: PullPolicy = "if-not-present"
    arch: Architecture
    vcpus: StrictInt = Field(ge=1, le=1024)
    memory_mb: StrictInt = Field(ge=64, le=16 * 1024 * 1024)
    format: DiskFormat = "qcow2"
    disk_gib: StrictInt = Field(
        default=0, ge=0, le=MAX_DISK_GIB, description="0: the image's virtual size"
    )
    pool: StrictStr | None = None
    node: StrictStr | None = None


class VMStatus(Output):
    phase: VmPhase = Field(
        description="pending (not placed yet, or vm.create not started), creating (the agent "
        "runs vm.create), stopped (the disk is ready; booting under QEMU is a later stage, so "
        "a VM whose disk is ready reports stopped), error (a task failed), deleting (vm.delete "
        "runs; the VM is gone when it succeeds)"
    )
    reason: str | None = Field(
        default=None,
        description="pending: the placement reason (pool_not_found, pool_not_on_node, "
        "no_eligible_nodes, node_pressure, insufficient_resources); error: the failed "
        "task's error code; stopped: disk_missing when the root disk's pool failed or its "
        "file is gone (null otherwise)",
    )
    message: str | None = None
    details: dict[str, Any] | None = None
    task_id: str | None = Field(default=None, description="the VM's latest vm.create/vm.delete")


class VmDisk(Output):
    id: str
    vm_id: str
    storage_pool_id: str
    pool: str
    device_order: int
    bus: str = "virtio"
    source_kind: str = "image"
    size_gib: int
    format: str
    file_path: str | None = Field(default=None, description="admin and operator only")
    virtual_size_bytes: int | None = None
    actual_size_bytes: int | None = None
    image_sha256: str | None = None
    missing: bool = Field(default=False, description="the disk's pool failed or its file is gone")
    missing_reason: MissingReason | None = None
    missing_since: datetime | None = Field(
        default=None, description="when the agent reported the file gone (file_missing)"
    )
    created_at: datetime
    updated_at: datetime


class VM(Output):
    """A VM. ``pool`` is the pool hosting the root disk once placed (before that,
    the requested pool); ``node`` is null until the VM is placed."""

    id: str
    name: str
    owner_id: str
    owner: str
    image_url: str | None
    image_sha256: str | None = None
    pull_policy: PullPolicy = "if-not-present"
    architecture: Architecture | None
    vcpus: int | None
    memory_mb: int | None
    format: DiskFormat = "qcow2"
    disk_gib: int = 0
    pool: str | None
    pool_id: str | None = None
    node: str | None = None
    node_hint: str | None = None
    status: VMStatus
    disks: list[VmDisk] | None = Field(default=None, description="GET by name only")
    created_at: datetime
    updated_at: datetime


VMList = Page[VM]


def validate_vm_name(name: str) -> str | None:
    """1..253 letters, digits, ``.``, ``_``, ``-``, starting and ending with a letter or digit."""
    if name == "":
        return "name is required"
    if len(name) > MAX_VM_NAME_CHARS:
        return f"name is too long (max {MAX_VM_NAME_CHARS} characters)"
    if _VM_NAME_RE.fullmatch(name) is None:
        return (
            f"invalid VM name {name!r} (letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def validate_image_url(url: str) -> str | None:
    """An absolute http(s) URL with a host and a usable basename."""
    if url == "":
        return "image_url is required"
    if len(url) > MAX_IMAGE_URL_CHARS:
        return f"image_url is too long (max {MAX_IMAGE_URL_CHARS} characters)"
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        return "image_url must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "image_url is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "image_url must be an absolute http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        # The URL is shown in every VM view, sent to the node, kept beside the
        # cached image (.source) and logged: a password in it would leak.
        return "image_url must not carry credentials (user:password@); serve the image without them"
    if image_basename(url) is None:
        return "image_url must end in a file name (the image cache is keyed by it)"
    return None


def validate_sha256(value: str) -> str | None:
    if re.fullmatch(r"[0-9a-fA-F]{64}", value, re.ASCII) is None:
        return "image_sha256 must be 64 hex digits"
    return None


def disk_missing(
    file_path: str | None,
    missing_since: datetime | None,
    pool_status: str | None,
) -> MissingReason | None:
    """Why a disk is missing, or None: a disk not made yet (no file) is never missing."""
    if file_path is None:
        return None
    if pool_status == "failed":
        return "pool_failed"
    if missing_since is not None:
        return "file_missing"
    return None


# placement (docs/pool-contract.md §7.2), pure -----------------------------------------------------
#
# Given what a VM asks for and the pool instances its ``pool`` names:
# - eligible: the node is ready, not cordoned, of the VM's architecture; the pool
#   is reconciled ``ready`` and has no disk pressure;
# - no instance at all: ``pool_not_found``; instances but none eligible:
#   ``node_pressure`` when one was excluded only for disk pressure, else
#   ``no_eligible_nodes`` (``details.candidates`` says why each was excluded);
# - a node hint keeps only that node's instance, else ``pool_not_on_node``;
# - room: with ``disk_gib`` > 0, ``available_bytes_effective`` must hold
#   ``disk_gib`` x 2^30 (an instance that never reported capacity is kept, ranked
#   last), else ``insufficient_resources``;
# - tie-break: most effective free bytes, then lower-case node name.

GIB = 1 << 30


@dataclass(frozen=True)
class Candidate:
    pool_id: str
    pool_name: str
    pool_path: str
    node_id: str
    node: str
    node_status: str  # projected: ready, cordoned, pending, unreachable, gone
    architecture: str | None
    reconciliation_status: str
    pressure_since: str | None
    effective_bytes: int | None


@dataclass(frozen=True)
class Ask:
    pool: str
    node: str | None
    disk_gib: int
    arch: str | None


@dataclass(frozen=True)
class Unplaceable:
    reason: str
    message: str
    details: dict[str, Any]


def _excluded(c: Candidate, arch: str | None) -> str | None:
    """Why an instance is not eligible (``disk_pressure`` is checked last)."""
    if c.node_status != "ready":
        return f"node_{c.node_status}"
    if arch is not None and c.architecture is not None and c.architecture != arch:
        return "architecture_mismatch"
    if c.reconciliation_status != "ready":
        return f"pool_{c.reconciliation_status}"
    if c.pressure_since is not None:
        return "disk_pressure"
    return None


def _rank(c: Candidate) -> tuple[int, int, str, str]:
    known = c.effective_bytes is not None
    return (0 if known else 1, -(c.effective_bytes or 0), c.node.lower(), c.pool_id)


def decide(ask: Ask, candidates: list[Candidate]) -> Candidate | Unplaceable:
    if not candidates:
        return Unplaceable(
            "pool_not_found", f'pool "{ask.pool}" not found in cluster', {"pool": ask.pool}
        )
    why = {c.pool_id: _excluded(c, ask.arch) for c in candidates}
    eligible = [c for c in candidates if why[c.pool_id] is None]
    if not eligible:
        pressured = [c for c in candidates if why[c.pool_id] == "disk_pressure"]
        if pressured:
            return Unplaceable(
                "node_pressure",
                "all candidate nodes under pressure",
                {
                    "reason": "node_pressure",
                    "filtered_due_to_pressure": [
                        {
                            "node": c.node,
                            "pool": c.pool_name,
                            "conditions": ["disk_pressure"],
                            "disk_pressure_since": c.pressure_since,
                        }
                        for c in pressured
                    ],
                },
            )
        return Unplaceable(
            "no_eligible_nodes",
            "no eligible node available",
            {
                "pool": ask.pool,
                "candidates": [
                    {"node": c.node, "pool_id": c.pool_id, "excluded": why[c.pool_id]}
                    for c in candidates
                ],
            },
        )
    if ask.node is not None:
        hint = ask.node.lower()
        eligible = [c for c in eligible if c.node.lower() == hint]
        if not eligible:
            there = [c for c in candidates if c.node.lower() == hint]
            details: dict[str, Any] = {"pool": ask.pool, "node": ask.node}
            message = f'pool "{ask.pool}" not present on node "{ask.node}"'
            if there:
                details["excluded"] = why[there[0].pool_id]
                message = f'pool "{ask.pool}" on node "{ask.node}" is not eligible'
                message += f" ({details['excluded']})"
            return Unplaceable("pool_not_on_node", message, details)
    if ask.disk_gib > 0:
        need = ask.disk_gib * GIB
        fits = [c for c in eligible if c.effective_bytes is None or c.effective_bytes >= need]
        if not fits:
            return Unplaceable(
                "insufficient_resources",
                "no node has sufficient resources",
                {
                    "required_disk_bytes": need,
                    "candidates": [
                        {
                            "node": c.node,
                            "pool_id": c.pool_id,
                            "available_bytes_effective": c.effective_bytes,
                        }
                        for c in eligible
                    ],
                },
            )
        eligible = fits
    return min(eligible, key=_rank)
