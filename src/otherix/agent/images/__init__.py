"""The node agent's per-pool image cache and VM disk materialisation (a library).

The agent daemon keeps one :class:`ImageCache` for the process, built by the
composition root with the process's one :class:`KeyedLocks` and
``fs.ProtectedRoots`` (``ImageCache(settings, locks=..., protected=...)``;
there are no module-level registries), and calls, per pool root
(``PoolReconciler.lookup(name).path``):

- ``ImageCache.ensure_image(pool_root, url, *, sha256=None,
  pull_policy="if-not-present", progress=None) -> CachedImage`` for a VM
  create (``CachedImage.downloaded`` says whether bytes were fetched);
- ``materialise_disk(pool_root, vm_id, image.path, format, disk_gib, *,
  scratch_area=cache.scratch, locks=cache.locks, protected=cache.protected,
  progress=None) -> DiskResult`` right after it, and ``remove_disk(pool_root,
  vm_id, *, locks=cache.locks, protected=cache.protected)`` on delete;
- ``list_images(pool_root)`` for the heartbeat (``CachedImage.to_wire()``);
- ``ImageCache.sweep_scratch(pool_root)`` at agent start and when a pool is
  first registered (the cache's ``ScratchArea`` knows which scratch files this
  process is writing).

Every failure is an :class:`ImageError` with ``code`` and ``retryable``.

Modules: ``cache`` (pull policies, collisions, single flight), ``entries``
(on-disk layout), ``inventory`` (``CachedImage``, ``list_images``),
``scratch`` (temp files, sweep), ``config`` (``ImageCacheSettings``),
``download`` (redirects, streaming), ``failures`` (network failures as
``ImageError``), ``transport`` (one pinned HTTP(S) GET, the watchdog),
``rate`` (the rate floor), ``sink`` (hash and flush threads), ``ssrf``
(address guard), ``formats`` (qcow2/raw, qemu-img), ``disks`` (VM disks),
``locks``, ``progress``, ``errors`` (codes and the retry table).
"""

from __future__ import annotations

from pathlib import Path

from otherix.agent.images import inventory
from otherix.agent.images.cache import PULL_POLICIES, ImageCache, PullPolicy
from otherix.agent.images.config import ImageCacheSettings
from otherix.agent.images.disks import DiskResult, materialise_disk, remove_disk
from otherix.agent.images.errors import ImageError, ImageErrorCode
from otherix.agent.images.formats import ImageFormat
from otherix.agent.images.inventory import CachedImage
from otherix.agent.images.locks import KeyedLocks
from otherix.agent.images.progress import Progress
from otherix.agent.images.scratch import ScratchArea
from otherix.agent.images.ssrf import SsrfPolicy

__all__ = [
    "PULL_POLICIES",
    "CachedImage",
    "DiskResult",
    "ImageCache",
    "ImageCacheSettings",
    "ImageError",
    "ImageErrorCode",
    "ImageFormat",
    "KeyedLocks",
    "Progress",
    "PullPolicy",
    "ScratchArea",
    "SsrfPolicy",
    "list_images",
    "materialise_disk",
    "remove_disk",
]


def list_images(pool_root: Path | str) -> list[CachedImage]:
    """Present entries of the pool's image cache, sorted by name; never hashes."""
    return inventory.list_images(Path(pool_root))
