"""On-disk layout of a pool's image cache: basenames, entries, the commit order.

Owns what the files under ``{pool}/images/`` mean. ``cache`` reads and
commits entries through here, ``inventory`` lists them. Every write goes
through ``otherix.agent.fs``.

One cache entry for basename ``B``::

    {pool}/images/B          the image bytes (0644)
    {pool}/images/B.source   our metadata, JSON, written atomically (0644):
                             {"url": first URL the bytes came from,
                              "aliases": [other URLs verified to serve the same bytes],
                              "sha256": hex, "format": "qcow2" | "raw",
                              "size_bytes": int, "virtual_size_bytes": int,
                              "imported_at": RFC 3339 UTC}
    {pool}/images/B.sha256   64 lowercase hex, no newline (0644): the commit marker

An entry counts (is *present*) only if ``B`` is a regular file (not a symlink)
of more than 0 bytes and ``B.sha256`` holds 64 lowercase hex characters once
trimmed. When ``B.source`` is there, its ``sha256`` must equal the sidecar's
and its ``size_bytes`` the file's size, or the entry is absent (damaged: a
sidecar rewritten with another well-formed sha, or a truncated image, is found
without hashing, and the next fetch repairs it; the commit order below never
leaves the two disagreeing). Entries written by older agents or imported by
hand (no ``.source``) still count; their URL is unknown, their format is
sniffed and their virtual size read from the header.

Basename (``basename_from_url``): the URL path's last segment, query and
fragment dropped, percent-decoded (strict UTF-8); refused with
``image_unavailable: URL has no usable basename`` if empty, ``.``/``..``,
containing ``/`` or NUL or a control character, starting with ``.``, ending
in ``.sha256``/``.source``/``.tmp``, or longer than 226 bytes.

Commit order (crash-safe): the old sidecar is removed first when an entry is
replaced, then the image is renamed into place, then ``.source``, then the
sidecar. A crash at any point leaves either the old entry, or an absent one
(re-fetched on next use), never a sidecar that describes other bytes.
"""

from __future__ import annotations

import json
import os
import re
import stat
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from otherix.agent import fs
from otherix.agent.images import formats
from otherix.agent.images.errors import ImageError
from otherix.agent.images.formats import ImageFormat

__all__ = [
    "IMAGES_DIR",
    "MAX_BASENAME_BYTES",
    "SIDECAR_SUFFIX",
    "SOURCE_SUFFIX",
    "TMP_SUFFIX",
    "Entry",
    "Source",
    "basename_from_url",
    "commit",
    "read_entry",
    "read_small",
    "rfc3339",
    "validate_basename",
    "write_source",
]

IMAGES_DIR: Final = "images"
SIDECAR_SUFFIX: Final = ".sha256"
SOURCE_SUFFIX: Final = ".source"
TMP_SUFFIX: Final = ".tmp"
FILE_MODE: Final = 0o644
#: 255 minus what the sidecar's atomic-write temp name adds (".B.sha256.tmp-<16 hex>").
MAX_BASENAME_BYTES: Final = 255 - len("..sha256.tmp-") - 16
_SHA_RE: Final = re.compile(r"[0-9a-f]{64}")
_MAX_SMALL_FILE: Final = 64 * 1024


@dataclass(frozen=True)
class Source:
    """The ``.source`` metadata of an entry."""

    url: str
    sha256: str
    format: ImageFormat
    size_bytes: int
    virtual_size_bytes: int
    imported_at: str
    aliases: tuple[str, ...] = ()

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.aliases)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "url": self.url,
                "aliases": list(self.aliases),
                "sha256": self.sha256,
                "format": self.format,
                "size_bytes": self.size_bytes,
                "virtual_size_bytes": self.virtual_size_bytes,
                "imported_at": self.imported_at,
            },
            indent=2,
        ).encode()

    @classmethod
    def parse(cls, raw: bytes) -> Source | None:
        try:
            d: Any = json.loads(raw)
            aliases = tuple(str(a) for a in d.get("aliases") or ())
            src = cls(
                url=str(d["url"]),
                sha256=str(d["sha256"]),
                format=d["format"],
                size_bytes=int(d["size_bytes"]),
                virtual_size_bytes=int(d["virtual_size_bytes"]),
                imported_at=str(d["imported_at"]),
                aliases=aliases,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if src.format not in formats.FORMATS:
            return None
        return src


@dataclass(frozen=True)
class Entry:
    """A present entry as found on disk (see the module docstring)."""

    name: str
    path: Path
    sha256: str
    size_bytes: int
    mtime: float
    source: Source | None = field(default=None)

    @property
    def urls(self) -> tuple[str, ...]:
        return self.source.urls if self.source is not None else ()


def rfc3339(ts: float) -> str:
    """``2024-05-01T12:00:00Z`` for a POSIX timestamp."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_basename(name: str) -> str:
    """``name`` if it can name a cache entry, else raise ``image_unavailable``.

    Beyond ``fs.safe_segment``: not hidden (a leading ``.`` is where temp files
    live), no control characters, not ending in ``.sha256``/``.source``/``.tmp``,
    and at most ``MAX_BASENAME_BYTES`` (226) so that every file of the entry,
    temp names included, fits the filesystem's 255-byte limit.
    """
    bad = (
        not name
        or name.startswith(".")
        or name.endswith((SIDECAR_SUFFIX, SOURCE_SUFFIX, TMP_SUFFIX))
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    )
    if not bad:
        try:
            fs.safe_segment(name)
            name.encode("utf-8")  # a file name that is not UTF-8 cannot be reported
            bad = len(os.fsencode(name)) > MAX_BASENAME_BYTES
        except (fs.UnsafePath, UnicodeError):
            bad = True
    if bad:
        raise ImageError("image_unavailable", f"URL has no usable basename ({name!r})")
    return name


def basename_from_url(url: str) -> str:
    """The last path segment of ``url``, query and fragment dropped, percent-decoded."""
    try:
        path = urllib.parse.urlsplit(url).path
        segment = urllib.parse.unquote(path.rsplit("/", 1)[-1], errors="strict")
    except (ValueError, UnicodeError) as exc:
        raise ImageError("image_unavailable", "URL has no usable basename") from exc
    return validate_basename(segment)


def read_small(path: Path) -> bytes | None:
    """Contents of a small regular file (not a symlink), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_SMALL_FILE:
            return None
        return os.read(fd, _MAX_SMALL_FILE)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_sidecar(path: Path) -> str | None:
    raw = read_small(path)
    if raw is None:
        return None
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return text if _SHA_RE.fullmatch(text) else None


def read_entry(images: Path, name: str) -> Entry | None:
    """The present entry called ``name`` in ``images``, or None (absent or invalid)."""
    path = images / name
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size <= 0:
        return None
    sha = read_sidecar(images / f"{name}{SIDECAR_SUFFIX}")
    if sha is None:
        return None
    raw = read_small(images / f"{name}{SOURCE_SUFFIX}")
    source = Source.parse(raw) if raw is not None else None
    if source is not None and (source.sha256 != sha or source.size_bytes != st.st_size):
        return None  # sidecar rewritten, or file truncated/grown, behind our back
    return Entry(name, path, sha, st.st_size, st.st_mtime, source)


def write_source(images: Path, name: str, source: Source) -> None:
    fs.atomic_write(images / f"{name}{SOURCE_SUFFIX}", source.to_json(), FILE_MODE)


def commit(images: Path, name: str, scratch: Path, source: Source) -> None:
    """Move a verified scratch file into the cache as ``name`` (order: module docstring)."""
    sidecar = images / f"{name}{SIDECAR_SUFFIX}"
    if fs.remove_file(sidecar):
        fs.fsync_dir(images)
    fs.publish(scratch, images / name, FILE_MODE)
    write_source(images, name, source)
    fs.atomic_write(sidecar, source.sha256.encode("ascii"), FILE_MODE)
