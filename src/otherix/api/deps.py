"""What the web process is built from, and who is calling.

``Deps`` is made once by ``bootstrap.open_deps`` (called by ``main.py`` and
``quickstart.py``) or by a test: the settings, the ``Database`` with its
aggregate stores, the clock, the watch hub and this process's shared memories
(the heartbeat buffer, the desired-state caches, the Idempotency-Key claims,
the login guard). The composition root (``api/compose.py``) hands each service
the parts of it that service uses; no service receives ``Deps`` itself. The
middleware, the workers and a few routes (settings, the backend) read it
through ``api/provide.py``. ``Principal`` (a user) and ``AgentIdentity`` (a
node) are what the guards of ``api/guards.py`` resolve a credential to.

This module imports no service: services import it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from otherix.api.claims import Claims
from otherix.api.clock import Clock
from otherix.api.datadir import DataDirLock
from otherix.api.loginguard import LoginGuard
from otherix.api.settings import ApiSettings
from otherix.api.watch import WatchHub
from otherix.models.heartbeat import DesiredState
from otherix.rbac import Permission, Role, Scope, scope_for
from otherix.store import Database


@dataclass
class HeartbeatBuffer:
    """Heartbeat times: a write-behind buffer for the store, and this process's
    liveness memory.

    ``record(node_id, at, mono)`` notes a heartbeat seen now: ``at`` is the
    wall-clock time (what ``last_heartbeat_at`` shows), ``mono`` the
    :meth:`Clock.monotonic` reading that liveness ages are measured with. A
    worker drains the buffer every second (``flush_heartbeats``) and writes
    the times in one batch; a failed flush puts them back with ``restore``,
    never over a newer heartbeat.

    ``last_seen`` (monotonic, never drained) and ``unreachable_since`` (when
    this process marked a node unreachable) are what the single-replica
    liveness pass reads instead of wall-clock columns; ``started`` (set by
    ``Deps``) is the origin for nodes this process has not heard from yet, so
    after a restart a node's age counts from the start, not from a heartbeat
    time of a previous process.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: dict[str, tuple[Any, float]] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)
    unreachable_since: dict[str, float] = field(default_factory=dict)
    started: float | None = None

    def record(self, node_id: str, at: Any, mono: float) -> None:
        with self.lock:
            self.seen[node_id] = (at, mono)
            if mono > self.last_seen.get(node_id, float("-inf")):
                self.last_seen[node_id] = mono

    def drain(self) -> list[tuple[str, Any, float]]:
        with self.lock:
            items = [(node_id, at, mono) for node_id, (at, mono) in self.seen.items()]
            self.seen.clear()
        return items

    def restore(self, items: list[tuple[str, Any, float]]) -> None:
        """Put back what a failed flush drained, keeping any newer heartbeat."""
        with self.lock:
            for node_id, at, mono in items:
                current = self.seen.get(node_id)
                if current is None or current[1] < mono:
                    self.seen[node_id] = (at, mono)

    def age(self, node_id: str, mono: float) -> float:
        """Seconds since this process last heard from the node (or since it started)."""
        with self.lock:
            return mono - self.last_seen.get(node_id, self._origin(mono))

    def mark_unreachable(self, node_ids: list[str], mono: float) -> None:
        with self.lock:
            for node_id in node_ids:
                self.unreachable_since[node_id] = mono

    def unreachable_for(self, node_id: str, mono: float) -> float:
        """Seconds the node has been unreachable as far as this process knows
        (counted from the process start when it already was at start)."""
        with self.lock:
            return mono - self.unreachable_since.get(node_id, self._origin(mono))

    def uptime(self, mono: float) -> float:
        """Seconds since this process started (by the monotonic clock)."""
        return mono - self._origin(mono)

    def _origin(self, mono: float) -> float:
        return mono if self.started is None else self.started

    def known(self) -> set[str]:
        with self.lock:
            return set(self.last_seen) | set(self.unreachable_since)

    def forget(self, node_ids: set[str]) -> None:
        """Drop the liveness memory of these nodes (deleted or gone ones)."""
        with self.lock:
            for node_id in node_ids:
                self.last_seen.pop(node_id, None)
                self.unreachable_since.pop(node_id, None)


@dataclass
class Deps:
    settings: ApiSettings
    db: Database
    clock: Clock
    jwt_secret: str
    #: The cluster's identity (``cluster_settings.cluster_id``), read at start.
    cluster_id: str = ""
    #: the data directory's shared lock (``datadir.hold_shared``), held while serving
    datadir_lock: DataDirLock | None = None
    hub: WatchHub = field(default_factory=WatchHub)
    heartbeats: HeartbeatBuffer = field(default_factory=HeartbeatBuffer)
    #: failed-login windows and the bounded password-hash queue (``api/loginguard.py``)
    logins: LoginGuard = field(init=False)
    #: node_id -> (desired revision, desired state); valid while the revision is
    #: unchanged, and every change bumps the revision in the store.
    desired_cache: dict[str, tuple[int, DesiredState]] = field(default_factory=dict)
    desired_json_cache: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    #: Idempotency-Key claims of this server (``api/claims.py``)
    claims: Claims = field(default_factory=Claims)
    #: one placement at a time (``PlacementService.schedule_vm``), so a periodic
    #: pass and an admission never compute a VM's reason from two snapshots at once
    placement_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.heartbeats.started is None:
            self.heartbeats.started = self.clock.monotonic()
        auth = self.settings.auth
        self.logins = LoginGuard(
            per_user_client=auth.login_rate_per_minute,
            per_client=auth.login_rate_per_client_per_minute,
            per_user=auth.login_rate_per_user_per_minute,
            concurrency=auth.password_hash_concurrency,
            queue=auth.password_hash_queue,
            in_flight_per_client=auth.login_in_flight_per_client,
        )


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    role: Role
    via: str  # "jwt" | "api_token"
    #: the refresh family of a JWT session (claim ``sid``); None for API tokens
    session_id: str | None = None

    def scope(self, permission: Permission) -> Scope:
        return scope_for(self.role, permission)


@dataclass(frozen=True)
class AgentIdentity:
    node_id: str
    name: str
