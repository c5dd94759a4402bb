"""Pool identity markers on disk: ``{pool}/.otherix-pool.json`` and the device under it.

Owns the marker's file format and the reads and the one write the identity
check needs. Called by the pool reconciler (``otherix.agent.pools``); what to
do with what is observed is decided in ``otherix.agent.poolplan`` (pure).

- ``observe(root)`` stats the root (never follows a symlinked root: the
  reconciler refuses those first), reads the marker if there is one, and
  takes the device fingerprint (``st_dev``, statvfs ``f_fsid``) and whether
  the pool layout (``images/``, ``scratch/``, ``vms/``) is there. It writes
  nothing.
- ``write(root, ...)`` writes a new marker through
  ``otherix.agent.fs.atomic_write``: a temp file created 0600 with O_EXCL,
  fsynced, renamed over the marker, then the root directory fsynced, so after
  a power cut the marker is either the old one or the new one, never half.

The file is one JSON object::

    {"kind": "otherix-pool-marker", "version": 1,
     "pool_id": "…", "pool_name": "fast", "cluster_id": "…", "marker_id": "…",
     "created_at": "2026-01-02T03:04:05Z", "path": "/var/lib/otherix/pools/fast",
     "device": {"st_dev": 2049, "major": 8, "minor": 1, "fsid": 1234567890}}

``path`` is the root as the node declares it; ``created_at`` is when this
marker was written. A marker is read with O_NOFOLLOW, must be a regular file
of at most 64 KiB and carry every field with the right type; anything else is
``Unreadable`` (and never overwritten).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from otherix.agent import fs
from otherix.agent.poolplan import LAYOUT, MARKER_NAME, Device, Marker, Seen, Unreadable

__all__ = ["KIND", "MARKER_NAME", "device_of", "observe", "read", "write"]

KIND: Final = "otherix-pool-marker"
VERSION: Final = 1
MARKER_MODE: Final = 0o600
_MAX_BYTES: Final = 64 * 1024
_FIELDS: Final = ("pool_id", "pool_name", "cluster_id", "marker_id", "created_at", "path")


def device_of(root: Path) -> Device:
    """The device fingerprint of the filesystem holding ``root`` (raises OSError)."""
    st = os.stat(root)
    vfs = os.statvfs(root)
    return Device(st_dev=st.st_dev, fsid=int(getattr(vfs, "f_fsid", 0)))


def _parse(raw: bytes) -> Marker | Unreadable:
    try:
        doc: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return Unreadable(f"not JSON: {exc}")
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        return Unreadable(f'not an otherix pool marker (no "kind": "{KIND}")')
    if doc.get("version") != VERSION:
        return Unreadable(f"marker version {doc.get('version')!r} is not {VERSION}")
    bad = sorted(k for k in _FIELDS if not isinstance(doc.get(k), str))
    values: dict[str, str] = {k: doc[k] for k in _FIELDS if k not in bad}
    device = doc.get("device")
    dev_ok = isinstance(device, dict) and all(
        isinstance(device.get(k), int) and not isinstance(device.get(k), bool)
        for k in ("st_dev", "fsid")
    )
    if bad or not dev_ok:
        return Unreadable(f"fields missing or of the wrong type: {', '.join(bad or ['device'])}")
    assert isinstance(device, dict)
    return Marker(
        pool_id=values["pool_id"],
        pool_name=values["pool_name"],
        cluster_id=values["cluster_id"],
        marker_id=values["marker_id"],
        created_at=values["created_at"],
        path=values["path"],
        device=Device(st_dev=device["st_dev"], fsid=device["fsid"]),
    )


def read(root: Path) -> Marker | Unreadable | None:
    """The marker in ``root``: None when there is none (a read, never a write)."""
    path = root / MARKER_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return Unreadable(fs.strerror(exc))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Unreadable("not a regular file")
        if st.st_size > _MAX_BYTES:
            return Unreadable(f"{st.st_size} bytes, more than {_MAX_BYTES}")
        raw = os.read(fd, _MAX_BYTES + 1)
    except OSError as exc:
        return Unreadable(fs.strerror(exc))
    finally:
        os.close(fd)
    return _parse(raw)


def _layout(root: Path) -> bool:
    for sub in LAYOUT:
        try:
            if not stat.S_ISDIR(os.lstat(root / sub).st_mode):
                return False
        except OSError:
            return False
    return True


def observe(root: Path) -> Seen:
    """What is at ``root``: missing, a directory (marker, device, layout) or something else.

    Raises OSError only when the root exists but cannot be examined (e.g. EACCES).
    """
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return Seen(root="missing")
    except NotADirectoryError:
        return Seen(root="other")
    if not stat.S_ISDIR(st.st_mode):
        return Seen(root="other")
    return Seen(root="dir", marker=read(root), device=device_of(root), layout=_layout(root))


def encode(
    *, pool_id: str, pool_name: str, cluster_id: str, marker_id: str, path: str, device: Device
) -> bytes:
    """The marker file's bytes (``created_at`` is now)."""
    doc = {
        "kind": KIND,
        "version": VERSION,
        "pool_id": pool_id,
        "pool_name": pool_name,
        "cluster_id": cluster_id,
        "marker_id": marker_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "path": path,
        "device": {
            "st_dev": device.st_dev,
            "major": os.major(device.st_dev),
            "minor": os.minor(device.st_dev),
            "fsid": device.fsid,
        },
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def write(
    root: Path, *, pool_id: str, pool_name: str, cluster_id: str, marker_id: str, path: str
) -> Device:
    """Write (or replace) the marker atomically; returns the device it records."""
    device = device_of(root)
    data = encode(
        pool_id=pool_id,
        pool_name=pool_name,
        cluster_id=cluster_id,
        marker_id=marker_id,
        path=path,
        device=device,
    )
    fs.atomic_write(root / MARKER_NAME, data, MARKER_MODE)
    with contextlib.suppress(OSError):  # the parent learns of a root just created
        fs.fsync_dir(root.parent)
    return device
