"""The cache as the rest of the agent sees it: ``CachedImage`` and the inventory.

Owns :class:`CachedImage` (what ``ImageCache.ensure_image`` returns and the
heartbeat reports, ``to_wire()`` being the ``ImageReport`` object) and
:func:`list_images`, which the daemon calls for each heartbeat. Cheap by
design: it stats files and reads the small sidecar and ``.source`` files,
never hashes; only present entries (``entries.read_entry``) are listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from otherix.agent.images import formats
from otherix.agent.images.entries import (
    IMAGES_DIR,
    SIDECAR_SUFFIX,
    Entry,
    read_entry,
    rfc3339,
    validate_basename,
)
from otherix.agent.images.errors import ImageError
from otherix.agent.images.formats import ImageFormat

__all__ = ["CachedImage", "list_images", "to_cached"]


@dataclass(frozen=True)
class CachedImage:
    """One present cache entry, as ``ensure_image`` and ``list_images`` return it.

    ``downloaded`` is True when this ``ensure_image`` call fetched bytes over
    the network (a cache fill, a re-fetch, or a check of a new URL), False for
    a hit and in ``list_images``. ``url`` is the URL the bytes were first
    imported from (None for entries written without ``.source``).
    """

    name: str
    path: Path
    sha256: str
    size_bytes: int
    virtual_size_bytes: int | None
    format: ImageFormat
    imported_at: str
    url: str | None = None
    downloaded: bool = False
    #: the sidecar's mtime: when the cache last handed the entry out (``images.evict``)
    last_used_at: str | None = None

    def to_wire(self) -> dict[str, object]:
        """The heartbeat's ``ImageReport`` object."""
        return {
            "name": self.name,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "virtual_size_bytes": self.virtual_size_bytes,
            "format": self.format,
            "imported_at": self.imported_at,
            "last_used_at": self.last_used_at,
        }


def _read_head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(formats.HEAD_BYTES)
    except OSError:
        return b""


def to_cached(entry: Entry, *, downloaded: bool = False) -> CachedImage:
    """A ``CachedImage`` for ``entry``; never hashes (format and size from ``.source``)."""
    if entry.source is not None:
        fmt: ImageFormat = entry.source.format
        virtual: int | None = entry.source.virtual_size_bytes
    else:
        head = _read_head(entry.path)
        fmt = formats.sniff(head)
        virtual = formats.header_virtual_size(head, entry.size_bytes)
    return CachedImage(
        name=entry.name,
        path=entry.path,
        sha256=entry.sha256,
        size_bytes=entry.size_bytes,
        virtual_size_bytes=virtual,
        format=fmt,
        imported_at=rfc3339(entry.mtime),
        url=entry.source.url if entry.source is not None else None,
        downloaded=downloaded,
        last_used_at=rfc3339(_sidecar_mtime(entry)),
    )


def _sidecar_mtime(entry: Entry) -> float:
    try:
        return os.stat(entry.path.with_name(entry.name + SIDECAR_SUFFIX)).st_mtime
    except OSError:
        return entry.mtime


def list_images(pool_root: Path) -> list[CachedImage]:
    """Every present entry of the pool's cache, sorted by name. Cheap: stats, never hashes."""
    images = pool_root / IMAGES_DIR
    try:
        names = os.listdir(images)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out: list[CachedImage] = []
    for name in sorted(names):
        try:
            validate_basename(name)
        except ImageError:
            continue
        entry = read_entry(images, name)
        if entry is not None:
            out.append(to_cached(entry))
    return out
