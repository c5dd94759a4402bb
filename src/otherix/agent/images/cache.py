"""The per-pool image cache: pull policies, collisions, single flight.

Owns :class:`ImageCache`, the object the agent daemon keeps for the life of
the process, and the pure decisions it applies (:func:`decide` before any
I/O on the network, :func:`settle` once a download's sha256 is known), so the
policy can be table-tested without files. Layout and commit order live in
``entries``, the network in ``download``.

``if-not-present`` (default), keyed by basename, per docs/pool-contract.md §10.2:

    pin?  cache state                   action
    no    absent                        download, hash, store
    no    present, URL known            hit: sha from the sidecar, never re-hashed
    no    present, other URL            download to scratch and compare:
                                        same sha → fine (URL recorded as an alias),
                                        other sha → image_collision
    S     absent                        download, verify == S (else checksum_mismatch,
                                        nothing written), store
    S     present, sidecar == S         re-hash the file: equal → hit; else re-download
    S     present, sidecar != S         URL known → re-download, verify, replace
                                        atomically (old file kept on failure);
                                        other URL → image_collision, no download

``always`` re-fetches every time: the same URL (or a known alias) replaces the
entry atomically when the bytes changed; another URL serving other bytes is
an ``image_collision`` and the cached file is untouched. A cached image is
never replaced by another URL's bytes: a VM may have been built from it and
its operators asked for *that* name. Replacing under the same URL is safe
because disks are full copies, never qcow2 overlays on the cache.

Single flight: one operation per (realpath(pool), basename) at a time in this
process (the process's one ``locks.KeyedLocks``, given by the composition
root and shared with the disk code). N concurrent ``ensure_image`` calls for
an absent image cause one download; the others wait, then hit.

The cache keeps no process-wide state of its own: its lock table and the
node's ``fs.ProtectedRoots`` (which every removal in a pool checks) are
required constructor arguments, and it hands both, with its
``scratch.ScratchArea``, to the VM disk code (``vmwork``).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import ssl
import threading
from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Final, Literal

from otherix.agent import fs
from otherix.agent.faultpoints import NO_FAULTS, FaultPoints
from otherix.agent.images import entries, evict, formats, inventory, quarantine, scratch, ssrf
from otherix.agent.images.config import ImageCacheSettings
from otherix.agent.images.download import fetch, make_ssl_context
from otherix.agent.images.entries import Entry, Source
from otherix.agent.images.errors import ImageError, ImageErrorCode
from otherix.agent.images.evict import Eviction
from otherix.agent.images.inventory import CachedImage
from otherix.agent.images.locks import KeyedLocks
from otherix.agent.images.progress import Progress
from otherix.agent.images.quarantine import Quarantined
from otherix.agent.images.scratch import ScratchArea
from otherix.agent.images.transport import parse_url, redact
from otherix.domain.cache import CachePolicy

__all__ = [
    "PULL_POLICIES",
    "Action",
    "ImageCache",
    "Outcome",
    "PullPolicy",
    "decide",
    "settle",
]

PullPolicy = Literal["if-not-present", "always"]
PULL_POLICIES: Final[tuple[PullPolicy, ...]] = ("if-not-present", "always")
Action = Literal["hit", "verify", "download", "collision"]
Outcome = Literal["store", "same", "collision"]
_SHA_RE: Final = re.compile(r"[0-9a-f]{64}")


def decide(entry: Entry | None, url: str, pin: str | None, policy: PullPolicy) -> Action:
    """What to do before touching the network (see the module docstring's table)."""
    if entry is None:
        return "download"
    known = url in entry.urls
    if pin is not None and pin != entry.sha256 and not known:
        return "collision"
    if policy == "always":
        return "download"
    if pin is None:
        return "hit" if known else "download"
    return "verify" if pin == entry.sha256 else "download"


def settle(entry: Entry | None, url: str, sha256: str) -> Outcome:
    """What to do with a verified download of ``url`` hashing to ``sha256``.

    ``entry`` is the present entry, or None when there is none or it failed
    its re-hash (a damaged file is repaired, whoever asks). ``same`` and
    ``store`` both commit the fresh, verified bytes (so a re-fetch also
    repairs a damaged file); ``same`` keeps the entry's URL and records this
    one as an alias.
    """
    if entry is None:
        return "store"
    if sha256 == entry.sha256:
        return "same"
    return "store" if url in entry.urls else "collision"


def _sha256_file(path: Path) -> str | None:
    """The file's sha256, or None if it cannot be read to the end (treated as damaged)."""
    try:
        with open(path, "rb", buffering=0) as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


def _collision(name: str, pool: Path, entry: Entry, url: str, detail: str) -> ImageError:
    old = f"from {entry.urls[0]}" if entry.urls else "from an unrecorded URL"
    return ImageError(
        "image_collision",
        f"image {name} in pool {pool} was imported {old} (sha {entry.sha256}); "
        f"{url} {detail}. The cached image is kept; publish the other image under "
        "another file name",
    )


class ImageCache:
    """The agent's image cache over all pools of this node (see the module docstring)."""

    def __init__(
        self,
        settings: ImageCacheSettings | None = None,
        *,
        locks: KeyedLocks,
        protected: fs.ProtectedRoots,
        resolver: ssrf.Resolver = ssrf.system_resolver,
        faults: FaultPoints = NO_FAULTS,
    ) -> None:
        self.settings = settings or ImageCacheSettings()
        #: where eviction pauses for a fault test (``otherix.agent.faultpoints``; none)
        self.faults = faults
        #: the process's one lock table; ``disks`` takes it too (key ``vm:<uuid>``).
        self.locks = locks
        #: the node's declared pool roots, filled by the pool reconciler; every
        #: removal in a pool (scratch sweep, VM disk) checks it.
        self.protected = protected
        #: this process's scratch files (``scratch.ScratchArea``); the disk clones
        #: of ``disks.materialise_disk`` use it too, so one sweep sees every one.
        self.scratch = ScratchArea(protected)
        self._resolver = resolver
        self._ssl: ssl.SSLContext | None = None  # built on the first https fetch
        self._ssl_lock = threading.Lock()

    # -- public -----------------------------------------------------------------

    def ensure_image(
        self,
        pool_root: Path | str,
        url: str,
        *,
        sha256: str | None = None,
        pull_policy: PullPolicy = "if-not-present",
        progress: Progress | None = None,
    ) -> CachedImage:
        """Make ``url``'s image present in the pool's cache and return the entry.

        Raises ``ImageError`` (codes in ``errors``); ValueError for a pull
        policy or pin the control plane should never have sent.
        """
        if pull_policy not in PULL_POLICIES:
            raise ValueError(f"pull_policy must be one of {PULL_POLICIES}, got {pull_policy!r}")
        if sha256 is not None and not _SHA_RE.fullmatch(sha256):
            raise ValueError("sha256 must be 64 lowercase hex characters")
        root = Path(pool_root)
        parse_url(url)
        name = entries.basename_from_url(url)
        images = self._images_dir(root)
        shown_url = redact(url)
        with self.locks.hold((os.path.realpath(root), name)):
            entry = entries.read_entry(images, name)
            action = decide(entry, shown_url, sha256, pull_policy)
            if action == "collision":
                assert entry is not None
                raise _collision(
                    name, root, entry, shown_url, f"was requested pinned to sha {sha256}"
                )
            if action == "hit":
                assert entry is not None
                evict.touch(images, name)  # its last use, for the cache's eviction
                return inventory.to_cached(entry)
            if action == "verify":
                assert entry is not None
                if _sha256_file(entry.path) == entry.sha256:
                    evict.touch(images, name)
                    return inventory.to_cached(entry)
                entry = None  # damaged: repair it
            got = self._download(root, images, name, url, entry, sha256, progress)
            evict.touch(images, name)
            return got

    def evict(
        self,
        pool_root: Path | str,
        policy: CachePolicy,
        *,
        in_use: Iterable[str],
        capacity: int,
        available: int,
        prune: bool = False,
        dry_run: bool = False,
    ) -> list[evict.Eviction]:
        """Evict entries of the pool's cache by ``policy`` (``images.evict``)."""
        return evict.evict(
            Path(pool_root),
            policy,
            in_use=in_use,
            capacity=capacity,
            available=available,
            locks=self.locks,
            prune=prune,
            dry_run=dry_run,
            faults=self.faults,
        )

    def eviction_history(self, pool_root: Path | str) -> list[Eviction]:
        """The pool's recent evictions as its journal keeps them (``images.evictlog``)."""
        return evict.history(Path(pool_root))

    def clear_quarantine(
        self, pool_root: Path | str, images: Collection[str] | None
    ) -> list[Quarantined]:
        """Delete the pool's quarantined entries of ``images`` (all when None; each under
        its entry's lock, so never mid-move); those deleted (``images.quarantine``)."""
        return quarantine.clear(Path(pool_root), images, protected=self.protected,
                                locks=self.locks)  # fmt: skip

    def list_images(self, pool_root: Path | str) -> list[CachedImage]:
        """Present entries of the pool's cache, sorted by name; never hashes."""
        return inventory.list_images(Path(pool_root))

    def sweep_scratch(self, pool_root: Path | str) -> list[str]:
        """Remove leftovers of interrupted work in the pool's ``scratch/``."""
        return self.scratch.sweep(Path(pool_root))

    # -- internals ---------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._ssl is None:
                self._ssl = make_ssl_context(self.settings.ca_file)
            return self._ssl

    @staticmethod
    def _images_dir(root: Path) -> Path:
        images = root / entries.IMAGES_DIR
        for sub in (images, root / scratch.SCRATCH_DIR):
            if not sub.is_dir():
                raise ImageError(
                    "image_unavailable",
                    f"pool {root} is not materialised ({sub.name}/ missing)",
                    retryable=True,
                )
            try:
                fs.ensure_within(root, sub)
            except fs.UnsafePath as exc:
                raise ImageError("image_unavailable", str(exc)) from exc
        return images

    def _room(self, root: Path, expected: int | None) -> Callable[[int | None], None]:
        margin = self.settings.space_margin_bytes

        def check(length: int | None) -> None:
            need = length if length is not None else expected
            if need is None:
                return
            try:
                free = fs.disk_usage(root).available_bytes
            except OSError:
                return
            if need + margin > free:
                raise ImageError(
                    "pool_full",
                    f"pool {root} has {free} bytes free; the image needs {need} "
                    f"plus a {margin}-byte margin",
                )

        return check

    def _download(
        self,
        root: Path,
        images: Path,
        name: str,
        url: str,
        entry: Entry | None,
        pin: str | None,
        progress: Progress | None,
    ) -> CachedImage:
        shown_url = redact(url)
        expected = entry.size_bytes if entry is not None and pin == entry.sha256 else None
        with self.scratch.file(root, name) as tmp:
            got = fetch(
                url,
                tmp,
                settings=self.settings,
                ssl_context=self._ssl_context,
                resolver=self._resolver,
                room=self._room(root, expected),
                progress=progress,
            )
            if pin is not None and got.sha256 != pin:
                raise ImageError(
                    "checksum_mismatch",
                    f"url {shown_url} served sha {got.sha256}, expected {pin}",
                )
            outcome = settle(entry, shown_url, got.sha256)
            if outcome == "collision":
                assert entry is not None
                raise _collision(name, root, entry, shown_url, f"serves sha {got.sha256}")
            fmt = formats.check_header(got.head)
            info = formats.info(tmp, fmt)
            source = Source(
                url=shown_url,
                sha256=got.sha256,
                format=fmt,
                size_bytes=got.size_bytes,
                virtual_size_bytes=info.virtual_size_bytes,
                imported_at=entries.rfc3339(os.stat(tmp).st_mtime),
            )
            if outcome == "same" and entry is not None and entry.source is not None:
                # Same bytes again: keep where they first came from, remember this URL.
                old = entry.source
                aliases = old.aliases if shown_url in old.urls else (*old.aliases, shown_url)
                source = replace(source, url=old.url, aliases=aliases)
            try:
                entries.commit(images, name, tmp, source)
            except OSError as exc:
                code: ImageErrorCode = (
                    "pool_full"
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    else "image_unavailable"
                )
                raise ImageError(
                    code,
                    f"cannot store image {name}: {fs.strerror(exc)}",
                    retryable=code != "pool_full",  # an I/O error may pass; no room does not
                ) from exc
        stored = entries.read_entry(images, name)
        if stored is None:  # pragma: no cover - someone removed it under our lock
            raise ImageError("image_unavailable", f"image {name} vanished after commit")
        return inventory.to_cached(stored, downloaded=True)
