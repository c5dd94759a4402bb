"""VM rules: the phase vocabulary, image URL and digest syntax, missing disks.

Owns: ``PHASES`` (docs/pool-contract.md §7; a VM whose disk is ready is ``stopped``),
``image_basename`` (the image cache key, docs/pool-contract.md §10.2), the syntax checks the
API applies to an image URL and its sha256, and ``disk_missing`` (why a made
disk is missing). Called by the API's VM services and routes, the wire models
(``models/vms.py``) and the CLI (phase filter, download progress).

Every ``validate_*`` function returns ``None`` when the input is valid, or the
exact user-facing message otherwise. Nothing here does I/O.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "MAX_IMAGE_URL_CHARS",
    "PHASES",
    "POWER_ACTIONS",
    "RUN_STATES",
    "MissingReason",
    "PowerAction",
    "PowerState",
    "RestartPolicy",
    "RunState",
    "disk_missing",
    "image_basename",
    "validate_image_url",
    "validate_sha256",
    "vm_disk_path",
]

#: VM phases (docs/pool-contract.md §7); a VM whose disk is ready is ``stopped``.
PHASES: tuple[str, ...] = ("pending", "creating", "stopped", "moving", "error", "deleting")
#: The desired power state in a VM's spec (``otherix vm start|stop``).
PowerState = Literal["running", "stopped"]
#: What the agent does when the VM's QEMU ends without being asked (docs/vm-runtime.md).
RestartPolicy = Literal["always", "on-failure", "never"]
#: What the node observes of a VM's QEMU (``status.state``).
RunState = Literal["starting", "running", "stopping", "stopped", "crashed", "failed"]
RUN_STATES: tuple[str, ...] = ("starting", "running", "stopping", "stopped", "crashed", "failed")
#: The power verbs (``POST /v1/vms/{name}/{action}``); each is a ``vm.<action>`` task.
PowerAction = Literal["start", "stop", "restart", "poweroff"]
POWER_ACTIONS: tuple[PowerAction, ...] = ("start", "stop", "restart", "poweroff")
#: What each verb leaves as the desired power state.
POWER_AFTER: dict[str, PowerState] = {
    "start": "running",
    "restart": "running",
    "stop": "stopped",
    "poweroff": "stopped",
}
#: Why a made disk is missing (``disk_missing``).
MissingReason = Literal["pool_failed", "file_missing"]

MAX_IMAGE_URL_CHARS = 2048
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}", re.ASCII)


def image_basename(url: str) -> str | None:
    """The cache key of an image URL: its last path segment, query dropped
    (docs/pool-contract.md §10.2)."""
    segment = urlsplit(url).path.rsplit("/", 1)[-1]
    if segment in ("", ".", ".."):
        return None
    return segment


def validate_image_url(url: str) -> str | None:
    """An absolute http(s) URL with a host, no credentials and a usable basename."""
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
    """64 hex digits, either case."""
    if _SHA256_RE.fullmatch(value) is None:
        return "image_sha256 must be 64 hex digits"
    return None


def disk_missing(
    file_path: str | None,
    missing_since: datetime | None,
    pool_status: str | None,
) -> MissingReason | None:
    """Why a disk is missing, or None: a disk not made yet (no file) is never missing.

    A made disk is missing when its pool is reconciled ``failed`` (its
    directory, marker or device is gone) or the agent reported the file gone.
    """
    if file_path is None:
        return None
    if pool_status == "failed":
        return "pool_failed"
    if missing_since is not None:
        return "file_missing"
    return None


def vm_disk_path(pool_path: str, vm_id: str, fmt: str) -> str:
    """Where a VM's root disk lives in a pool: ``{pool}/vms/{vm-id}/disk.{format}``
    (the agent's layout, ``otherix.agent.images.disks``), as the node names the pool."""
    return f"{pool_path.rstrip('/')}/vms/{vm_id}/disk.{fmt}"
