"""Pool reconciler of the node agent: turns declared pools into directories on this node.

Called by the agent's reconcile loop with the ``declared_pools`` of each
heartbeat reply (``DeclaredPool.from_wire``, or ``otherix.agent.report``);
the ``PoolReport`` list it returns goes into the next heartbeat. The image
cache and VM disk code find a pool's root with ``PoolReconciler.lookup``;
the agent's scan task uses ``PoolReconciler.scan``.

Shape: observe → plan → apply. The observed state is the in-memory registry
(empty at boot, filled only from reconciliation) and what is on disk.
``plan`` is pure: every declared pool is ensured (cheap and idempotent, and
how a failed pool recovers), registered pools no longer declared are
unregistered. The identity and overlap decisions are pure too
(``otherix.agent.poolplan``). ``ensure_pool`` applies one pool; every write
goes through ``otherix.agent.fs``. Nothing is ever deleted on disk: an
unregistered pool's directory stays where it is.

Each pass first compares the real paths of all declared roots that pass
their own path rules (a root that is invalid or reached through a symlink
fails with that, more specific, reason): a pool whose root equals, contains
or lies inside an earlier pool's (``created_at``, then id), or is the same
directory (device and inode: a bind mount), fails ``pool_path_overlap`` and
nothing is created for it; those real roots go to the node's
``fs.ProtectedRoots`` (a required constructor argument, the one instance the
composition root also gives the image cache), so no removal in one pool ever
touches another.

``ensure_pool`` (``otherix.agent.materialise``) applies one pool; its rules,
and why a symlinked ancestor is refused, are written down there.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from otherix.agent import fs
from otherix.agent.materialise import POOL_SUBDIRS, POOL_TYPE_LOCAL_DIR, ensure_pool, path_refused
from otherix.agent.poolplan import Root, later_overlaps
from otherix.agent.pooltypes import (
    DeclaredDisk,
    DeclaredPool,
    PoolReport,
    PoolUnknownError,
    ReconciliationStatus,
    RegisteredPool,
)

__all__ = [
    "POOL_SUBDIRS",
    "POOL_TYPE_LOCAL_DIR",
    "DeclaredDisk",
    "DeclaredPool",
    "Plan",
    "PoolReconciler",
    "PoolReport",
    "PoolUnknownError",
    "ReconciliationStatus",
    "RegisteredPool",
    "ensure_pool",
    "plan",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What one reconcile pass does: pools to ensure, registered names to forget."""

    ensure: list[DeclaredPool] = field(default_factory=list)
    unregister: list[str] = field(default_factory=list)


def plan(declared: Sequence[DeclaredPool], registered: Mapping[str, RegisteredPool]) -> Plan:
    """Pure diff of declared against registered pools (names compared case-insensitively).

    Every declared pool is ensured, in declared order; a name declared twice is
    ensured once (first wins). Registered pools whose name is no longer declared
    are unregistered, by canonical name, sorted case-insensitively.
    """
    ensure: list[DeclaredPool] = []
    seen: set[str] = set()
    for pool in declared:
        key = pool.name.lower()
        if key in seen:
            continue
        seen.add(key)
        ensure.append(pool)
    unregister = sorted(
        (reg.name for key, reg in registered.items() if key.lower() not in seen),
        key=lambda name: (name.lower(), name),
    )
    return Plan(ensure=ensure, unregister=unregister)


def _roots(pools: Sequence[DeclaredPool]) -> list[Root]:
    out: list[Root] = []
    for i, p in enumerate(pools):
        if path_refused(p):
            continue  # fails on its own path (invalid, or through a symlink)
        real = os.path.realpath(p.path)
        try:
            st = os.stat(real)
            inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            inode = None
        out.append(Root(p.name.lower(), p.name, p.id, p.created_at, i, real, inode))
    return out


def _overlap_report(p: DeclaredPool, root: Root, other: Root) -> PoolReport:
    return PoolReport.failed(
        p.name,
        f'pool "{p.name}": {p.path} (real path {root.realpath}) overlaps pool "{other.name}" '
        f"({other.pool_id or 'no id'}) at {other.realpath}, which was created earlier on this "
        "node: one directory, one pool; nothing was created for this pool",
        "pool_path_overlap",
    )


def _load_known(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        _log.warning("pool marker memory unreadable; starting empty", extra={"error": str(exc)})
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: v for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}


class PoolReconciler:
    """The agent's pool registry and the reconcile pass that keeps it in line with the CP.

    ``memory`` (``{data_dir}/pools.json`` in the agent) keeps the markers this
    agent wrote or verified (pool id -> marker id) across restarts, so a
    pool the control plane has not recorded as materialised yet still counts
    as known after a restart (``poolplan``: ``remembered``). Written through
    ``fs.atomic_write`` (0600) when it changes; entries of pools no longer
    declared are dropped.

    ``protected`` is the node's ``fs.ProtectedRoots``: each pass sets in it the
    real roots of every declared pool, which every removal checks.
    """

    def __init__(self, memory: Path | None = None, *, protected: fs.ProtectedRoots) -> None:
        self._protected = protected
        #: lower(name) -> pool; starts empty at boot, filled only by ``reconcile``.
        self.registered: dict[str, RegisteredPool] = {}
        self._last: dict[str, PoolReport] = {}
        self._memory = memory
        #: pool id -> marker id this agent wrote or verified (poolplan: ``remembered``)
        self._known: dict[str, str] = _load_known(memory)
        self._saved: dict[str, str] = dict(self._known)
        #: lower(name) -> ids of its disks last seen missing (warned once each)
        self._missing: dict[str, set[str]] = {}
        self._legacy_warned: set[str] = set()

    def reconcile(self, declared: Sequence[DeclaredPool]) -> list[PoolReport]:
        """One pass: plan, check overlaps, ensure every declared pool, update the registry.

        Returns one report per declared pool, sorted by lower(name). A failed
        pool stays registered; an undeclared one is forgotten, its files kept.
        """
        the_plan = plan(declared, self.registered)
        roots = _roots(the_plan.ensure)
        self._protected.set(r.realpath for r in roots)
        overlaps = later_overlaps(roots)
        by_key = {r.key: r for r in roots}
        reports: list[PoolReport] = []
        for pool in the_plan.ensure:
            key = pool.name.lower()
            other = overlaps.get(key)
            if other is not None:
                report = _overlap_report(pool, by_key[key], other)
            else:
                report = ensure_pool(pool, remembered=self._known.get(pool.id))
            self._observed(pool, report)
            previous = self.registered.get(key)
            if previous is not None and previous.path != pool.path:
                _log.info(
                    "pool root changed; nothing moved on disk",
                    extra={"pool": pool.name, "old_path": previous.path, "path": pool.path},
                )
            self.registered[key] = RegisteredPool(name=pool.name, path=pool.path)
            reports.append(report)
        for name in the_plan.unregister:
            self.registered.pop(name.lower(), None)
            self._missing.pop(name.lower(), None)
            _log.info("pool unregistered (CP-side delete reconciled)", extra={"pool": name})
        reports.sort(key=lambda r: (r.name.lower(), r.name))
        self._last = {r.name.lower(): r for r in reports}
        self._remember({p.id for p in the_plan.ensure if p.id})
        return reports

    def _remember(self, declared_ids: set[str]) -> None:
        known = {k: v for k, v in self._known.items() if k in declared_ids}
        changed = known != self._saved
        self._known = known
        if not changed or self._memory is None:
            return
        try:
            data = json.dumps(known, sort_keys=True).encode("utf-8")
            fs.atomic_write(self._memory, data, 0o600)
        except OSError as exc:
            _log.warning("cannot save the pool marker memory", extra={"error": fs.strerror(exc)})
            return
        self._saved = dict(known)

    def _observed(self, pool: DeclaredPool, report: PoolReport) -> None:
        """Log what changed and remember markers and missing disks."""
        key = pool.name.lower()
        if report.reconciliation_status == "failed":
            _log.warning(
                "pool reconcile failed",
                extra={
                    "pool": pool.name,
                    "reason": report.reconciliation_reason,
                    "error": report.reconciliation_error,
                },
            )
            return
        if report.marker_id is not None:
            self._known[pool.id] = report.marker_id
        elif key not in self._legacy_warned:
            self._legacy_warned.add(key)
            _log.warning(
                "pool has no identity marker: the control plane sent no pool id "
                "(upgrade the control plane)",
                extra={"pool": pool.name},
            )
        now = set(report.missing_disks or ())
        before = self._missing.get(key, set())
        paths = {d.id: d for d in pool.disks}
        for disk_id in sorted(now - before):
            disk = paths[disk_id]
            _log.warning(
                "vm disk missing",
                extra={"pool": pool.name, "vm": disk.vm_id, "disk": disk_id, "path": disk.path},
            )
        for disk_id in sorted(before - now):
            _log.info("vm disk present again", extra={"pool": pool.name, "disk": disk_id})
        self._missing[key] = now

    def lookup(self, name: str) -> RegisteredPool | None:
        """The registered pool called ``name`` (any case), or None."""
        return self.registered.get(name.lower())

    def scan(self, name: str) -> PoolReport:
        """Re-read the pool's usage now. Raises PoolUnknownError if it is not registered.

        A pool whose last reconcile failed keeps that failed report (its root
        is not trusted, so its filesystem is not measured).
        """
        pool = self.lookup(name)
        if pool is None:
            raise PoolUnknownError(f'pool "{name}" is not registered on this node')
        last = self._last.get(name.lower())
        if last is not None and last.reconciliation_status == "failed":
            return last
        try:
            usage = fs.disk_usage(Path(pool.path))
        except OSError as exc:
            return PoolReport.failed(
                pool.name, f'pool "{pool.name}": statfs {pool.path}: {fs.strerror(exc)}'
            )
        if last is None:
            return PoolReport.ready(pool.name, usage)
        return replace(
            last, capacity_bytes=usage.capacity_bytes, available_bytes=usage.available_bytes
        )
