"""Pool reconciler of the node agent: turns declared pools into directories on this node.

Called by the agent's reconcile loop with the ``declared_pools`` of each
heartbeat reply (``DeclaredPool.from_wire``); the ``PoolReport`` list it returns
goes into the next heartbeat. The image cache and VM disk code find a pool's
root with ``PoolReconciler.lookup``; the agent's scan task uses
``PoolReconciler.scan``.

Shape: observe → plan → apply. The observed state is the in-memory registry
(empty at boot, filled only from reconciliation). ``plan`` is pure: every
declared pool is ensured (cheap and idempotent, and how a failed pool
recovers), registered pools no longer declared are unregistered. ``ensure_pool``
applies one pool; every write goes through ``otherix.agent.fs``. Nothing is
ever deleted on disk: an unregistered pool's directory stays where it is.

``ensure_pool`` rules, in order; the first failure becomes the report's
``reconciliation_error`` and the pool is ``failed``:

1. name required; type ``local_dir``; root required and absolute; no NUL and
   no ``..`` segment in the root (the control plane's own path syntax, checked
   again here because the agent acts on it as root).
2. No existing ancestor of the root may be a symlink, and the root itself must
   not be a symlink out of the pool.
3. ``mkdir -p`` the root at mode 0750, then check 2 again (closes the window
   between the check and the mkdir for anything but a live race).
4. A write probe (``.otherix-write-probe``, 0600, O_EXCL, one byte, fsync,
   unlink) proves the root is writable.
5. ``images/``, ``scratch/`` and ``vms/`` at 0750; each must not be a symlink
   whose target lies outside the root's realpath (checked before and after
   the mkdir, so a chmod never lands outside the pool).
6. statvfs of the root gives capacity and available bytes.

Why a symlinked ancestor is refused (rather than followed): the control plane
validates pool paths against an operator allowlist by string prefix, e.g.
``/var/lib/otherix/pools/``. If ``/var/lib/otherix/pools`` (or any component
above the pool) were a symlink, a pool inside the allowlist would really live
wherever the link points, and the agent, running as root, would create
directories and files there. Refusing is cheap and the error names the
component. Operators who want pools on another disk mount it (or bind-mount
it) at the allowlisted path, or declare the real path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, Self

from otherix.agent import fs

__all__ = [
    "POOL_SUBDIRS",
    "POOL_TYPE_LOCAL_DIR",
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

POOL_SUBDIRS: Final = ("images", "scratch", "vms")
POOL_TYPE_LOCAL_DIR: Final = "local_dir"
_DIR_MODE: Final = 0o750

ReconciliationStatus = Literal["ready", "failed"]


class PoolUnknownError(LookupError):
    """The pool is not (or no longer) registered on this node."""


def _wire_str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"declared pool: {key} must be a string, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class DeclaredPool:
    """One entry of a heartbeat reply's ``declared_pools``: what this node must have."""

    name: str
    type: str
    path: str
    config: Mapping[str, object] = field(default_factory=dict, hash=False)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> Self:
        """Build from the JSON object; missing strings become "" and fail in ``ensure_pool``."""
        config = d.get("config")
        if config is None:
            config = {}
        if not isinstance(config, Mapping):
            raise ValueError(
                f"declared pool: config must be an object, got {type(config).__name__}"
            )
        return cls(
            name=_wire_str(d, "name"),
            type=_wire_str(d, "type"),
            path=_wire_str(d, "path"),
            config=MappingProxyType(dict(config)),
        )


@dataclass(frozen=True)
class RegisteredPool:
    """A pool this agent knows about: canonical name and root path as declared."""

    name: str
    path: str


@dataclass(frozen=True)
class PoolReport:
    """Observed state of one pool, as sent in the heartbeat's ``pools[]``."""

    name: str
    reconciliation_status: ReconciliationStatus
    reconciliation_error: str | None
    capacity_bytes: int | None
    available_bytes: int | None

    @classmethod
    def ready(cls, name: str, usage: fs.Usage) -> Self:
        return cls(name, "ready", None, usage.capacity_bytes, usage.available_bytes)

    @classmethod
    def failed(cls, name: str, error: str) -> Self:
        return cls(name, "failed", error, None, None)

    def to_wire(self) -> dict[str, object]:
        """The ``HeartbeatPoolReport`` JSON object."""
        return {
            "name": self.name,
            "reconciliation_status": self.reconciliation_status,
            "reconciliation_error": self.reconciliation_error,
            "capacity_bytes": self.capacity_bytes,
            "available_bytes": self.available_bytes,
        }


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


class _PoolError(Exception):
    """Internal: one rule of ``ensure_pool`` failed; the message is the report's error."""


def _validate(p: DeclaredPool) -> None:
    if not p.name:
        raise _PoolError("pool: name is required")
    q = f'pool "{p.name}"'
    if p.type != POOL_TYPE_LOCAL_DIR:
        raise _PoolError(f'{q}: unsupported type "{p.type}"')
    if not p.path:
        raise _PoolError(f"{q}: root is required")
    if not p.path.startswith("/"):
        raise _PoolError(f'{q}: root must be absolute (got "{p.path}")')
    if "\x00" in p.path:
        raise _PoolError(f"{q}: root must not contain NUL")
    if ".." in p.path.split("/"):
        raise _PoolError(f'{q}: root must not contain a ".." segment (got "{p.path}")')


def _check_root(p: DeclaredPool, root: Path) -> None:
    """No symlinked ancestor, and the root itself is not a symlink leaving the pool."""
    ancestor = fs.first_symlinked_ancestor(root)
    if ancestor is not None:
        raise _PoolError(f'pool "{p.name}": {p.path} traverses a symlink ({ancestor})')
    # With real ancestors, the root's realpath must be the root itself.
    expected = os.path.join(os.path.realpath(root.parent), root.name)
    if os.path.realpath(root) != os.path.normpath(expected):
        raise _PoolError(f'pool "{p.name}": {p.path} is a symlink that escapes the pool')


def _check_subdir(p: DeclaredPool, root_real: Path, target: Path) -> None:
    try:
        fs.ensure_within(root_real, target)
    except fs.UnsafePath:
        raise _PoolError(f'pool "{p.name}": {target} is a symlink that escapes the pool') from None


def _make_dir(prefix: str, path: Path, shown: str) -> None:
    try:
        fs.make_dir(path, _DIR_MODE)
    except OSError as exc:
        raise _PoolError(f"{prefix}: mkdir {shown}: {fs.strerror(exc)}") from exc


def _materialise(p: DeclaredPool) -> fs.Usage:
    _validate(p)
    q = f'pool "{p.name}"'
    root = Path(p.path)
    _check_root(p, root)
    _make_dir(f"{q} root", root, p.path)
    _check_root(p, root)
    try:
        fs.write_probe(root)
    except OSError as exc:
        raise _PoolError(f"{q}: write probe in {p.path}: {fs.strerror(exc)}") from exc
    root_real = Path(os.path.realpath(root))
    for sub in POOL_SUBDIRS:
        target = fs.safe_join(root, sub)
        _check_subdir(p, root_real, target)
        _make_dir(f"{q} {sub}", target, str(target))
        _check_subdir(p, root_real, target)
    try:
        return fs.disk_usage(root)
    except OSError as exc:
        raise _PoolError(f"{q}: statfs {p.path}: {fs.strerror(exc)}") from exc


def ensure_pool(p: DeclaredPool) -> PoolReport:
    """Apply one declared pool on disk (idempotent) and report ``ready`` or ``failed``."""
    try:
        usage = _materialise(p)
    except _PoolError as exc:
        return PoolReport.failed(p.name, str(exc))
    return PoolReport.ready(p.name, usage)


class PoolReconciler:
    """The agent's pool registry and the reconcile pass that keeps it in line with the CP."""

    def __init__(self) -> None:
        #: lower(name) -> pool; starts empty at boot, filled only by ``reconcile``.
        self.registered: dict[str, RegisteredPool] = {}
        self._last: dict[str, PoolReport] = {}

    def reconcile(self, declared: Sequence[DeclaredPool]) -> list[PoolReport]:
        """One pass: plan, ensure every declared pool, update the registry.

        Returns one report per declared pool, sorted by lower(name). A failed
        pool stays registered; an undeclared one is forgotten, its files kept.
        """
        the_plan = plan(declared, self.registered)
        reports: list[PoolReport] = []
        for pool in the_plan.ensure:
            report = ensure_pool(pool)
            if report.reconciliation_status == "failed":
                _log.warning(
                    "pool reconcile failed",
                    extra={"pool": pool.name, "error": report.reconciliation_error},
                )
            key = pool.name.lower()
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
            _log.info("pool unregistered (CP-side delete reconciled)", extra={"pool": name})
        reports.sort(key=lambda r: (r.name.lower(), r.name))
        self._last = {r.name.lower(): r for r in reports}
        return reports

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
        return PoolReport.ready(pool.name, usage)
