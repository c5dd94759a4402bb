"""What the agent reports about its pools: declared pools in, heartbeat ``pools[]`` out.

``PoolState`` is called by the daemon (``otherix.agent.daemon``) with each
desired state. It adds two rules around the pool reconciler
(``otherix.agent.pools``) and keeps the report set the heartbeat carries:

1. Allowlist (defense in depth). A declared pool whose absolute path is not
   under ``storage.allowed_path_prefixes`` is not handed to the reconciler:
   it is reported ``failed`` (reason ``path_not_allowed``) with a message
   naming the prefixes, and nothing is created on disk. The control plane
   checks the same rule at create; the agent, running as root, does not
   trust that alone. Relative paths go on to the reconciler, whose own
   message ("root must be absolute") is clearer.
2. Re-rooting. With ``storage.host_root`` other than ``/`` a declared path
   ``/var/lib/otherix/pools/x`` is materialised at
   ``{host_root}/var/lib/otherix/pools/x``. The allowlist is checked on the
   declared path, the reconciler's safety checks on the real one. The
   declared VM disks' paths are re-rooted the same way.

Capacity hysteresis: a pool's ``capacity_bytes``/``available_bytes`` are
re-read on every pass, but the reported numbers change only when either one
has moved by more than 1% of capacity or more than 64 MiB, whichever is less,
since they were last reported. Status or error changes are always reported
at once. Small drift (logs, temp files) then costs no heartbeat payload and no
control-plane write; the scheduler and the disk-pressure rule (15%) need no
finer grain.

Image cache (given an ``images`` inventory, ``otherix.agent.images.ImageCache``
in the agent): every ready pool's report carries ``images``, its cache as
``list_images`` sees it (stats and small reads, never a hash), re-listed on
each reconcile pass and whenever ``refresh_images`` is called (the VM task
workers ask for that after a create), so the digest, and hence the next
heartbeat, changes when the inventory does. A failed pool carries
``images: null`` (the control plane keeps what it had). When a pool is first
registered (at agent start, or again after it was undeclared), its
``scratch/`` is swept: leftovers of downloads and clones a killed agent
left behind are removed before anything reads the pool (never an entry that
is, holds or lies inside another declared pool's root: the node's
``fs.ProtectedRoots``, which the reconciler and the image cache share).

Scrub (issue 16, ``otherix.agent.scrubber``, set with ``set_scrubber``): every ready
pool's report carries ``scrub``, the scrubber's report (last completion, rate, what
``quarantine/`` holds, the scrub running now), re-read on each pass and on
``refresh_images``; ``scrub_targets`` tells the scrubber which pools are ready.

Usage (issue 16, ``otherix.agent.usage``): every ready pool's report carries
``usage``, what its ``vms/``, ``images/`` and ``scratch/`` hold. Walking them
is dearer than a statfs, so a pool is measured at most every
``usage_interval`` seconds (``storage.usage_interval``) and when its root
changes; ``refresh_images`` (after a VM task) and ``scan`` measure at once.
The capacity hysteresis covers it too: a new measurement is reported when a
number moved by more than the same threshold, or when it comes from
``refresh_images``/``scan`` (a VM disk made or removed must show even when
it is small). A failed pool carries ``usage: null`` (the control plane keeps
what it had).

Drift (issue 16, ``otherix.agent.drift``): every ready pool's report carries ``drift``,
what its ``vms/``, ``images/`` and ``scratch/`` hold that the declared state does not
own (``owned``: the declared disks, incoming ones included, and the VMs that a
``vm.*`` task of the desired state names, which ``reconcile`` is told with
``tasks``). Scanned on the usage schedule (``usage_interval``) and at once on
``refresh_images``, ``drift_purge`` and ``vm_import``; ``set_scratch`` says which
scratch files a task of this process is writing (never stray). A pool declared
without an id (an older control plane, which sends no disks) carries ``drift: null``:
what it owns is unknown.

``resolve`` is how the VM tasks find a pool's root on this host: the pool
must be registered, ready, and declared at the path the task names.

``digest`` is the sha256 of the canonical JSON of the full report set (sorted
by lower-cased name), the value the heartbeat's ``digest`` field carries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Final, Protocol

from pydantic import ValidationError

from otherix.agent import drift, fs, pools, usage
from otherix.domain.cache import CacheConfigError, CachePolicy, parse_cache_config
from otherix.domain.drift import Owned
from otherix.domain.paths import path_allowed
from otherix.models.heartbeat import (
    AgentTask,
    DeclaredPool,
    EvictionReport,
    ImageReport,
    PoolDriftReport,
    PoolReport,
    PoolScrubReport,
    PoolUsage,
)

__all__ = [
    "DEFAULT_USAGE_INTERVAL",
    "MAX_ERROR_CHARS",
    "SIGNIFICANT_BYTES",
    "ImageInventory",
    "PoolState",
    "digest_of",
    "settle",
]

_log = logging.getLogger(__name__)

#: Absolute part of the capacity hysteresis.
SIGNIFICANT_BYTES: Final = 64 * 1024 * 1024
#: The wire model's limit on ``reconciliation_error``.
MAX_ERROR_CHARS: Final = 4096
#: Seconds between two measurements of a pool's usage (``storage.usage_interval``).
DEFAULT_USAGE_INTERVAL: Final = 60.0


class _Wire(Protocol):
    def to_wire(self) -> dict[str, object]: ...


class ImageInventory(Protocol):
    """What the report needs of the image cache (``ImageCache`` has it)."""

    def list_images(self, pool_root: Path | str) -> Sequence[_Wire]: ...

    def eviction_history(self, pool_root: Path | str) -> Sequence[_Wire]: ...

    def clear_quarantine(
        self, pool_root: Path | str, images: Collection[str] | None
    ) -> Sequence[_Wire]: ...

    def sweep_scratch(self, pool_root: Path | str) -> list[str]: ...

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
    ) -> Sequence[_Wire]: ...


class ScrubReports(Protocol):
    """What the report needs of the scrubber (``otherix.agent.scrubber.Scrubber``)."""

    def report(self, root: Path | str) -> dict[str, object]: ...


def _threshold(capacity: int) -> float:
    return min(capacity / 100, SIGNIFICANT_BYTES)


_BYTES = {"capacity_bytes": None, "available_bytes": None, "usage": None}
#: task types whose ``vm_id`` owns ``vms/<vm_id>/`` while they are in the desired state
_VM_TASK_PREFIX: Final = "vm."


def _usage_moved(old: PoolUsage | None, new: PoolUsage | None, limit: float) -> bool:
    if old is None or new is None:
        return old != new
    before, after = old.model_dump(), new.model_dump()
    return any(abs(after[k] - before[k]) > limit for k in after)


def settle(previous: PoolReport | None, observed: PoolReport) -> PoolReport:
    """The report to send: ``observed``, unless only its byte counts moved, and not by much."""
    if previous is None or previous.model_copy(update=_BYTES) != observed.model_copy(update=_BYTES):
        return observed
    old_cap, old_avail = previous.capacity_bytes, previous.available_bytes
    new_cap, new_avail = observed.capacity_bytes, observed.available_bytes
    if old_cap is None or old_avail is None or new_cap is None or new_avail is None:
        return observed
    limit = _threshold(max(old_cap, new_cap))
    if abs(new_cap - old_cap) > limit or abs(new_avail - old_avail) > limit:
        return observed
    if _usage_moved(previous.usage, observed.usage, limit):
        return observed
    return previous


def digest_of(reports: Sequence[PoolReport]) -> str:
    """sha256 hex of the canonical JSON of ``reports`` (order as given)."""
    payload = json.dumps(
        [r.model_dump(mode="json") for r in reports], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _to_wire(report: pools.PoolReport) -> PoolReport:
    """The wire form; the error is cut to the wire limit. May raise ValidationError."""
    error = report.reconciliation_error
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    missing = report.missing_disks
    return PoolReport(
        name=report.name,
        reconciliation_status=report.reconciliation_status,
        reconciliation_error=error,
        reconciliation_reason=report.reconciliation_reason,
        capacity_bytes=report.capacity_bytes,
        available_bytes=report.available_bytes,
        marker_id=report.marker_id,
        missing_disks=None if missing is None else list(missing),
    )


def _wire_all(reports: Sequence[pools.PoolReport]) -> list[PoolReport]:
    out: list[PoolReport] = []
    for report in reports:
        try:
            out.append(_to_wire(report))
        except ValidationError as exc:  # e.g. a 254-character name: never block the loop
            _log.error("pool cannot be reported", extra={"pool": report.name, "error": exc})
    return out


def _sort_key(name: str) -> tuple[str, str]:
    return (name.lower(), name)


class PoolState:
    """The node's pool reports, kept in line with the declared pools."""

    def __init__(
        self,
        reconciler: pools.PoolReconciler,
        *,
        allowed_prefixes: Sequence[str],
        host_root: Path = Path("/"),
        images: ImageInventory | None = None,
        running: Callable[[], set[str]] | None = None,
        usage_interval: float = DEFAULT_USAGE_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        #: ids of the VMs whose QEMU runs here (the VM supervisor): their images stay
        self._running = running
        #: lower(name) -> the pool as last declared (its cache policy, its disks)
        self._declared: dict[str, DeclaredPool] = {}
        #: lower(name) -> the pool's latest evictions, reported until they age out
        self._evictions: dict[str, deque[EvictionReport]] = {}
        self.reconciler = reconciler
        self._prefixes = list(allowed_prefixes)
        self._host_root = host_root
        self._images = images
        self._reported: dict[str, PoolReport] = {}
        self._digest = digest_of([])
        #: lower(name) -> host path of pools whose scratch/ was swept since registration
        self._swept: dict[str, str] = {}
        self._usage_interval = usage_interval
        self._monotonic = monotonic
        #: lower(name) -> (when, host root, usage) of the pool's last measurement
        self._measured: dict[str, tuple[float, str, PoolUsage]] = {}
        self._scrubs: ScrubReports | None = None
        # drift (issue 16): lower(name) -> (when, host root, report); VM ids of vm.* tasks
        self._drifted: dict[str, tuple[float, str, PoolDriftReport]] = {}
        self._task_vms: frozenset[str] = frozenset()
        self._scratch_busy: Callable[[str], bool] = lambda _path: False
        self._protected = fs.ProtectedRoots()

    @property
    def reports(self) -> list[PoolReport]:
        """The current report set, sorted by lower-cased name."""
        return [self._reported[k] for k in sorted(self._reported)]

    @property
    def digest(self) -> str:
        return self._digest

    def host_path(self, declared_path: str) -> str:
        """Where a declared absolute path lives on this host (``storage.host_root``)."""
        if self._host_root == Path("/") or not declared_path.startswith("/"):
            return declared_path
        return str(self._host_root) + declared_path

    def _refusal(self, pool: DeclaredPool) -> str | None:
        if not pool.path.startswith("/") or path_allowed(pool.path, self._prefixes):
            return None
        prefixes = ", ".join(f'"{p}"' for p in self._prefixes)
        return (
            f'pool "{pool.name}": path "{pool.path}" is outside this node\'s allowed path '
            f"prefixes [{prefixes}] (storage.allowed_path_prefixes); nothing was created"
        )

    def _to_host(self, pool: DeclaredPool) -> pools.DeclaredPool:
        """The declared pool as the reconciler takes it: paths as this host sees them."""
        return pools.DeclaredPool(
            name=pool.name,
            type=pool.type,
            path=self.host_path(pool.path),
            config=dict(pool.config),
            id=pool.id,
            cluster_id=pool.cluster_id,
            created_at=pool.created_at,
            identity=pool.identity,
            marker_id=pool.marker_id,
            disks=tuple(
                pools.DeclaredDisk(d.id, d.vm_id, self.host_path(d.file_path), d.incoming)
                for d in pool.disks
            ),
        )

    def scan(self, name: str) -> pools.PoolReport:
        """Measure a registered pool now (a scan task); the report adopts the numbers.

        Raises ``PoolUnknownError`` when no such pool is registered. A fresh
        measurement bypasses the hysteresis, so the next heartbeat says what
        the scan said instead of overwriting it with older numbers.
        """
        report = self.reconciler.scan(name)
        key = name.lower()
        previous = self._reported.get(key)
        if previous is not None and report.reconciliation_status == "ready":
            update: dict[str, object] = {
                "capacity_bytes": report.capacity_bytes,
                "available_bytes": report.available_bytes,
            }
            root = self._root(name)
            if root is not None and previous.reconciliation_status == "ready":
                update["usage"] = self._measure(key, root)
            self._reported[key] = previous.model_copy(update=update)
            self._digest = digest_of(self.reports)
        return report

    def reconcile(self, declared: Sequence[DeclaredPool], tasks: Sequence[AgentTask] = ()) -> bool:
        """One pass over ``declared``; True if the report set changed. ``tasks``: the
        desired state's tasks (a ``vm.*`` task's VM owns its directory: drift)."""
        self._task_vms = frozenset(
            str(t.args.get("vm_id")).lower()
            for t in tasks
            if t.type.startswith(_VM_TASK_PREFIX) and t.args.get("vm_id")
        )
        to_apply: list[pools.DeclaredPool] = []
        observed: list[pools.PoolReport] = []
        self._declared = {}
        for pool in declared:
            self._declared.setdefault(pool.name.lower(), pool)
            refusal = self._refusal(pool)
            if refusal is not None:
                observed.append(pools.PoolReport.failed(pool.name, refusal, "path_not_allowed"))
                continue
            to_apply.append(self._to_host(pool))
        observed.extend(self.reconciler.reconcile(to_apply))
        wired = [
            self._with_drift(self._with_usage(self._with_images(r))) for r in _wire_all(observed)
        ]
        settled: dict[str, PoolReport] = {}
        for report in sorted(wired, key=lambda r: _sort_key(r.name)):
            key = report.name.lower()
            if key in settled:  # declared twice: first wins, as in the reconciler
                continue
            previous = self._reported.get(key)
            settled[key] = settle(previous, report)
            if report.reconciliation_status == "ready" and (
                previous is None or previous.reconciliation_status != "ready"
            ):
                _log.info("pool ready", extra={"pool": report.name})
        changed = settled != self._reported
        self._swept = {k: v for k, v in self._swept.items() if k in settled}
        self._measured = {k: v for k, v in self._measured.items() if k in settled}
        self._drifted = {k: v for k, v in self._drifted.items() if k in settled}
        self._reported = settled
        self._digest = digest_of(self.reports)
        return changed

    # --- usage ------------------------------------------------------------------------

    def _measure(self, key: str, root: str) -> PoolUsage:
        measured = PoolUsage.model_validate(usage.measure(root).to_wire())
        self._measured[key] = (self._monotonic(), root, measured)
        return measured

    def _with_usage(self, report: PoolReport) -> PoolReport:
        """``report`` with the pool's usage (ready pools), measured when it is due."""
        key = report.name.lower()
        root = self._root(report.name)
        if report.reconciliation_status != "ready" or root is None:
            self._measured.pop(key, None)
            return report
        last = self._measured.get(key)
        if last is None or last[1] != root or self._monotonic() - last[0] >= self._usage_interval:
            return report.model_copy(update={"usage": self._measure(key, root)})
        return report.model_copy(update={"usage": last[2]})

    # --- image cache ------------------------------------------------------------------

    def _root(self, name: str) -> str | None:
        registered = self.reconciler.lookup(name)
        return registered.path if registered is not None else None

    def _with_images(self, report: PoolReport) -> PoolReport:
        """``report`` with the pool's cache inventory (ready pools), sweeping scratch once."""
        key = report.name.lower()
        root = self._root(report.name)
        if self._images is None or report.reconciliation_status != "ready" or root is None:
            if root is None:
                self._swept.pop(key, None)
            return report
        if self._swept.get(key) != root:
            removed = self._images.sweep_scratch(root)
            if removed:
                _log.info("swept scratch", extra={"pool": report.name, "removed": len(removed)})
            self._swept[key] = root
        self._evict(report, root)
        evicted = list(self._evictions.get(key, ())) or None
        images = self._list(report.name, root)
        update = {"images": images, "evictions": evicted, "scrub": self._scrub(report.name, root)}
        return report.model_copy(update=update)

    def set_scrubber(self, scrubs: ScrubReports) -> None:
        """Where the pools' scrub reports come from (the scrubber, built after the pools)."""
        self._scrubs = scrubs

    def _scrub(self, name: str, root: str) -> PoolScrubReport | None:
        if self._scrubs is None:
            return None
        try:
            return PoolScrubReport.model_validate(self._scrubs.report(root))
        except ValidationError as exc:
            _log.warning("scrub cannot be reported", extra={"pool": name, "error": exc})
            return None

    def scrub_targets(self) -> list[tuple[str, Path, dict[str, object]]]:
        """(name, host root, declared config) of every ready pool, for the scrubber.
        Safe to call from its thread: it only reads."""
        out: list[tuple[str, Path, dict[str, object]]] = []
        for key, report in sorted(self._reported.items()):
            root = self._root(report.name)
            declared = self._declared.get(key)
            if report.reconciliation_status == "ready" and root is not None:
                out.append((report.name, Path(root), dict(declared.config) if declared else {}))
        return out

    def set_running(self, running: Callable[[], set[str]]) -> None:
        """Where the ids of running VMs come from (the VM host, built after the pools)."""
        self._running = running

    def in_use(self, name: str) -> set[str]:
        """The image sha256s of the pool's declared disks whose VM runs here."""
        declared = self._declared.get(name.lower())
        running = self._running() if self._running is not None else set()
        if declared is None:
            return set()
        return {d.image_sha256 for d in declared.disks if d.image_sha256 and d.vm_id in running}

    def declares_vm(self, name: str, vm_id: str) -> bool:
        """Whether the pool's declared disks include one of VM ``vm_id`` (incoming or
        not): then its ``vms/{vm-id}/`` is owned and a disk removal must leave it."""
        declared = self._declared.get(name.lower())
        return declared is not None and any(d.vm_id == vm_id for d in declared.disks)

    def policy(self, name: str) -> CachePolicy | None:
        """The pool's ``config.cache`` (None when malformed: then nothing is evicted)."""
        declared = self._declared.get(name.lower())
        try:
            return parse_cache_config(declared.config if declared else None)
        except CacheConfigError as exc:
            _log.warning("cache config ignored", extra={"pool": name, "error": str(exc)})
            return None

    def _evict(self, report: PoolReport, root: str, *, prune: bool = False) -> None:
        """Apply the pool's cache limits now (module docstring: eviction)."""
        assert self._images is not None
        policy = self.policy(report.name)
        if policy is None or report.capacity_bytes is None or report.available_bytes is None:
            return
        try:
            available = os.statvfs(root)
            free = available.f_bavail * available.f_frsize
        except OSError:
            free = report.available_bytes
        self._seed_evictions(report.name, root)
        done = self._images.evict(
            root,
            policy,
            in_use=self.in_use(report.name),
            capacity=report.capacity_bytes,
            available=free,
            prune=prune,
        )
        self._remember(report.name, done)

    def _seed_evictions(self, name: str, root: str | Path) -> None:
        """After a start, the pool's recent evictions come from its eviction journal, so
        those done just before a kill are still reported (``images.evictlog``)."""
        key = name.lower()
        if key in self._evictions or self._images is None:
            return
        self._evictions[key] = deque(maxlen=50)
        self._remember(name, self._images.eviction_history(root))

    def _remember(self, name: str, done: Sequence[_Wire]) -> None:
        if not done:
            return
        kept = self._evictions.setdefault(name.lower(), deque(maxlen=50))
        for eviction in done:
            try:
                kept.append(EvictionReport.model_validate(eviction.to_wire()))
            except ValidationError as exc:
                _log.warning("eviction cannot be reported", extra={"pool": name, "error": exc})

    def prune(self, name: str, *, dry_run: bool) -> list[dict[str, object]]:
        """Evict every entry of pool ``name`` that may go, whatever the limits (a
        ``storage_pool.cache_prune`` task); with ``dry_run`` only say which.
        Raises ``PoolUnknownError`` when the pool is not registered and ready."""
        root = self.resolve(name, None)
        if self._images is None:
            return []
        policy = self.policy(name) or CachePolicy()
        self._seed_evictions(name, root)
        done = self._images.evict(
            root, policy, in_use=self.in_use(name), capacity=0, available=0,
            prune=True, dry_run=dry_run,
        )  # fmt: skip
        if not dry_run:
            self._remember(name, done)
            self.refresh_images()
        return [dict(e.to_wire()) for e in done]

    def clear_quarantine(self, name: str, images: list[str] | None) -> list[dict[str, object]]:
        """Delete pool ``name``'s quarantined cache entries of ``images`` (all when None; a
        ``storage_pool.quarantine_clear`` task); what went. The next report says what
        ``quarantine/`` holds now. Raises ``PoolUnknownError`` when the pool is not
        registered and ready."""
        root = self.resolve(name, None)
        if self._images is None:
            return []
        cleared = [dict(q.to_wire()) for q in self._images.clear_quarantine(root, images)]
        self.refresh_images()
        return cleared

    def _list(self, name: str, root: str) -> list[ImageReport]:
        assert self._images is not None
        out: list[ImageReport] = []
        for image in self._images.list_images(root):
            try:
                out.append(ImageReport.model_validate(image.to_wire()))
            except ValidationError as exc:  # never let one odd file hide the pool
                _log.warning("image cannot be reported", extra={"pool": name, "error": exc})
        return out

    def refresh_images(self) -> bool:
        """Re-list the cache and re-measure the usage of every ready pool now (after a
        VM task); True if the report set changed. The new usage is reported as
        measured, past the hysteresis."""
        changed = False
        for key, report in list(self._reported.items()):
            root = self._root(report.name)
            if report.reconciliation_status != "ready" or root is None:
                continue
            update: dict[str, object] = {"usage": self._measure(key, root)}
            if self._images is not None:
                update["images"] = self._list(report.name, root)
                update["evictions"] = list(self._evictions.get(key, ())) or None
            if self._scrubs is not None:
                update["scrub"] = self._scrub(report.name, root)
            update["drift"] = self._scan_drift(key, report.name, root)
            refreshed = report.model_copy(update=update)
            if refreshed != report:
                self._reported[key] = refreshed
                changed = True
        if changed:
            self._digest = digest_of(self.reports)
        return changed

    # --- drift (issue 16) ---------------------------------------------------------------

    def set_scratch(self, busy: Callable[[str], bool], protected: fs.ProtectedRoots) -> None:
        """Which scratch files (by real path) a task of this process is writing, and the
        node's declared pool roots (``images.ScratchArea`` has both)."""
        self._scratch_busy = busy
        self._protected = protected

    def owned(self, name: str, root: str | Path) -> Owned:
        """What the declared state owns in pool ``name`` (host root ``root``)."""
        declared = self._declared.get(name.lower())
        base = os.path.normpath(str(root))
        paths: set[str] = set()
        vm_ids = set(self._task_vms)
        for d in declared.disks if declared is not None else ():
            vm_ids.add(d.vm_id.lower())
            host = os.path.normpath(self.host_path(d.file_path))
            if host.startswith(base + "/"):
                paths.add(os.path.relpath(host, base))
        return Owned(frozenset(paths), frozenset(vm_ids))

    def _scan_drift(self, key: str, name: str, root: str) -> PoolDriftReport | None:
        declared = self._declared.get(key)
        if declared is None or not declared.id:  # an older control plane sends no disks:
            return None  # what is owned is unknown, so nothing is drift
        found = drift.scan(
            Path(root), self.owned(name, root), busy=self._scratch_busy, protected=self._protected
        )
        try:
            report = PoolDriftReport.model_validate(found.to_wire())
        except ValidationError as exc:
            _log.warning("drift cannot be reported", extra={"pool": name, "error": exc})
            return None
        self._drifted[key] = (self._monotonic(), root, report)
        return report

    def _with_drift(self, report: PoolReport) -> PoolReport:
        """``report`` with the pool's drift (ready pools), scanned when it is due."""
        key = report.name.lower()
        root = self._root(report.name)
        if report.reconciliation_status != "ready" or root is None:
            self._drifted.pop(key, None)
            return report
        last = self._drifted.get(key)
        if last is None or last[1] != root or self._monotonic() - last[0] >= self._usage_interval:
            return report.model_copy(update={"drift": self._scan_drift(key, report.name, root)})
        return report.model_copy(update={"drift": last[2]})

    def drift_purge(self, name: str, paths: list[str]) -> dict[str, object]:
        """Remove the ``paths`` of pool ``name`` that are still drift now (a
        ``storage_pool.drift_purge`` task). Raises ``PoolUnknownError``."""
        root = self.resolve(name, None)
        result = drift.purge(
            root,
            paths,
            self.owned(name, root),
            busy=self._scratch_busy,
            protected=self._protected,
        )
        self.refresh_images()
        return result

    def vm_import(
        self, name: str, declared_path: str | None, vm_id: str, source: str
    ) -> dict[str, object]:
        """Adopt the orphan ``source`` of pool ``name`` as VM ``vm_id``'s disk (a
        ``vm.import`` task). Raises ``PoolUnknownError``, ``drift.AdoptError``."""
        root = self.resolve(name, declared_path)
        owned = self.owned(name, root)
        result = drift.adopt(
            root, vm_id, source, owned, busy=self._scratch_busy, protected=self._protected
        )
        self.refresh_images()
        return result

    def resolve(self, name: str, declared_path: str | None) -> Path:
        """The host path of the registered, ready pool ``name`` (any case).

        ``declared_path``, when given, must be where the pool is declared.
        Raises ``PoolUnknownError`` (with a message for the task's error)
        otherwise. Safe to call from worker threads: it only reads.
        """
        registered = self.reconciler.lookup(name)
        if registered is None:
            raise pools.PoolUnknownError(f'pool "{name}" is not registered on this node')
        if declared_path is not None and os.path.normpath(
            self.host_path(declared_path)
        ) != os.path.normpath(registered.path):
            raise pools.PoolUnknownError(
                f'pool "{name}" is registered on this node at another path than {declared_path}'
            )
        report = self._reported.get(name.lower())
        if report is None or report.reconciliation_status != "ready":
            error = report.reconciliation_error if report is not None else "not reconciled yet"
            raise pools.PoolUnknownError(f'pool "{name}" is not ready on this node: {error}')
        return Path(registered.path)
