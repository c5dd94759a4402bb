"""Tools for the control-plane fault tests in this folder (kill -9, partition, outage).

- ``CpProcess``: ``otherix-api serve`` as a real subprocess on a fixed port and
  store, so a test can SIGKILL it and start it again on the same port and data
  (the harness's ``ControlPlane`` runs in-process and cannot be killed).
- ``ClusterTarget``: what ``support.harness.Cluster`` needs to enrol agents
  against a ``CpProcess`` (or against a proxy in front of one).
- ``CountingProxy``: a TCP forwarder that timestamps every connection it
  accepts, with the client's address; while the backend is down it resets
  each connection at once, which is as close to "connection refused" as a
  listener can get, so agents behind it see the control plane as down.
- ``store_problems``: integrity checks of a store: SQLite's
  ``integrity_check``/``foreign_key_check``, PostgreSQL's amcheck on every
  btree index, and on both an orphan count for every foreign key of the schema,
  pools without their status row, and duplicate (node, name) pools.
- ``join_node``: enrol a node on a ``CpProcess`` through the join flow.
- ``list_pools``: every pool the API lists, following cursors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from otherix.api.settings import ApiSettings
from otherix.config import load_config
from otherix.store.schema import metadata, pool_status, storage_pools
from support.harness import NODE_ROOT, wait_until
from support.server import free_port

API_EXE = Path(sys.executable).with_name("otherix-api")
ADMIN = ("admin", "fault-admin-password-1")
POOLS_PREFIX = f"{NODE_ROOT}/pools/"


class CpProcess:
    """``otherix-api serve`` in its own process; ``start`` again after ``kill`` reuses
    the port, the data dir (JWT secret) and the database."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url or f"sqlite:///{data_dir}/otherix.db"
        self.port = free_port()
        self.extra_env = dict(env or {})
        self.log_path = data_dir.with_name(data_dir.name + ".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra_args: list[str] = []  # appended to the serve command line (e.g. --init)
        self.token = ""
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTHERIX_")}
        env.update(
            {
                "OTHERIX_BOOTSTRAP_ADMIN_USERNAME": ADMIN[0],
                "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD": ADMIN[1],
                "OTHERIX_STORAGE_POOLS__ALLOWED_PATH_PREFIXES": f'["{POOLS_PREFIX}"]',
            }
        )
        env.update(self.extra_env)
        return env

    def settings(self) -> ApiSettings:
        """The settings the process runs with, as far as the harness reads them."""
        return load_config(
            ApiSettings,
            env=self._env(),
            overrides={"data_dir": self.data_dir, "database.url": self.database_url},
        )

    def start(self, timeout: float = 60.0) -> CpProcess:
        assert not self.alive, "the control plane is already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(API_EXE),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--database-url",
            self.database_url,
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"control plane exited at start; see {self.log_path}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout, "the control plane to answer /readyz")
        if not self.token:
            r = httpx.post(
                f"{self.url}/v1/auth/login",
                json={"username": ADMIN[0], "password": ADMIN[1]},
                timeout=30,
            )
            r.raise_for_status()
            self.token = str(r.json()["access_token"])
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the server process and wait for it to end; its exit status."""
        assert self.proc is not None
        assert self.alive, "the control plane is not running"
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def stop(self) -> None:
        """SIGTERM (drain), SIGKILL after 30 s; a no-op when not running."""
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=kwargs.pop("timeout", 30),
            **kwargs,
        )


@dataclass
class Endpoint:
    """The ``server`` a ``Cluster`` reads: where agents connect and the allowlist."""

    host: str
    port: int
    settings: ApiSettings


@dataclass
class ClusterTarget:
    """Duck-types the conftest ``Api`` object for ``support.harness.Cluster``."""

    server: Endpoint
    tokens: dict[str, str] = field(default_factory=dict)


def cluster_target(cp: CpProcess, *, host: str = "127.0.0.1", port: int | None = None) -> Any:
    """``Cluster(cluster_target(cp), tmp_path)``; ``host="0.0.0.0"`` and a proxy's port
    to enrol network-namespaced agents through a ``CountingProxy``."""
    return ClusterTarget(Endpoint(host, port or cp.port, cp.settings()), {"admin": cp.token})


@dataclass(frozen=True)
class Connection:
    at: float  # time.monotonic() when accepted
    client_ip: str
    forwarded: bool  # False: the backend refused, the client got a reset


class CountingProxy:
    """Forwards ``host:port`` to ``127.0.0.1:backend_port`` and logs every accepted
    connection (``connections``). Threads: one accept loop, two pumps per connection."""

    def __init__(self, backend_port: int, host: str = "0.0.0.0") -> None:
        self.backend_port = backend_port
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.backend_port), timeout=2)
            except OSError:
                self._log(addr[0], forwarded=False)
                # RST instead of FIN: the client's request fails at once
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            upstream.settimeout(None)
            self._log(addr[0], forwarded=True)
            with self._lock:
                self._open.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _log(self, ip: str, *, forwarded: bool) -> None:
        with self._lock:
            self.connections.append(Connection(time.monotonic(), ip, forwarded))

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):  # either side gone: end the pair (HTTP needs no half-close)
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
                with self._lock:
                    self._open.discard(s)

    def from_ip(self, ip: str, since: float = 0.0) -> list[Connection]:
        with self._lock:
            return [c for c in self.connections if c.client_ip == ip and c.at >= since]

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            leftovers = list(self._open)
        for s in leftovers:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


def join_node(cp: CpProcess, name: str) -> str:
    """Enrol node ``name`` on ``cp`` (a join token, then the join); its credential.
    The node stays ``pending`` until it heartbeats."""
    with cp.client() as c:
        r = c.post("/v1/nodes/join-tokens", json={})
        assert r.status_code == 201, r.text
        r = c.post("/v1/nodes/join", json={"join_token": r.json()["token"], "name": name})
        assert r.status_code == 201, r.text
        return str(r.json()["credential"])


def list_pools(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every pool the API lists (``params`` such as ``node=``), following the cursor."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):  # bounded: 10k pages
        q = {"limit": 200, **params, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/storage-pools", params=q)
        assert r.status_code == 200, r.text
        body = r.json()
        out.extend(body["data"])
        cursor = body["meta"]["next_cursor"]
        if not cursor:
            return out
    raise AssertionError("pool list did not end after 10,000 pages")


def sa_url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextlib.contextmanager
def store_conn(db_url: str) -> Iterator[sa.Connection]:
    """A plain connection to the store, opened by the test itself (not the server)."""
    engine = sa.create_engine(sa_url(db_url))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


@dataclass
class StoreReport:
    problems: list[str]
    indexes_checked: int  # PostgreSQL: btree indexes amcheck verified; SQLite: 0
    foreign_keys_checked: int


def _engine_checks(conn: sa.Connection) -> tuple[list[str], int]:
    problems: list[str] = []
    if conn.dialect.name == "sqlite":
        rows = [tuple(r) for r in conn.exec_driver_sql("PRAGMA integrity_check").fetchall()]
        if rows != [("ok",)]:
            problems.append(f"PRAGMA integrity_check: {rows}")
        fk = [tuple(r) for r in conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()]
        if fk:
            problems.append(f"PRAGMA foreign_key_check: {fk}")
        return problems, 0
    conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS amcheck")
    conn.commit()
    indexes = conn.execute(
        sa.text(
            "SELECT c.oid, c.relname FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE am.amname = 'btree' AND n.nspname = current_schema() "
            "ORDER BY c.relname"
        )
    ).all()
    for oid, name in indexes:
        try:
            # heapallindexed: every heap tuple must be found in the index too
            conn.execute(sa.text("SELECT bt_index_check(CAST(:oid AS oid), true)"), {"oid": oid})
            conn.commit()
        except sa.exc.DBAPIError as exc:
            conn.rollback()
            problems.append(f"amcheck {name}: {exc.orig}")
    return problems, len(indexes)


def store_problems(db_url: str) -> StoreReport:
    """Everything wrong with the store at ``db_url`` (empty ``problems``: healthy);
    a store too damaged to query is one problem, not an exception."""
    report = StoreReport([], 0, 0)
    try:
        _check_store(db_url, report)
    except sa.exc.DBAPIError as exc:
        report.problems.append(f"store unreadable: {exc.orig}")
    return report


def _check_store(db_url: str, report: StoreReport) -> None:
    with store_conn(db_url) as conn:
        problems, report.indexes_checked = _engine_checks(conn)
        report.problems.extend(problems)
        problems = report.problems
        n_fks = 0
        for table in metadata.sorted_tables:
            for fk in table.foreign_keys:
                n_fks += 1
                child, parent = fk.parent, fk.column
                orphans = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(table)
                    .where(child.is_not(None), ~sa.select(parent).where(parent == child).exists())
                ).scalar_one()
                if orphans:
                    problems.append(
                        f"{orphans} {table.name}.{child.name} value(s) match no "
                        f"{parent.table.name}.{parent.name}"
                    )
        no_status = conn.execute(
            sa.select(sa.func.count())
            .select_from(storage_pools)
            .where(
                ~sa.select(pool_status.c.pool_id)
                .where(pool_status.c.pool_id == storage_pools.c.id)
                .exists()
            )
        ).scalar_one()
        if no_status:
            problems.append(f"{no_status} storage_pools row(s) without a pool_status row")
        dups = conn.execute(
            sa.select(storage_pools.c.node_id, storage_pools.c.name_lower, sa.func.count())
            .group_by(storage_pools.c.node_id, storage_pools.c.name_lower)
            .having(sa.func.count() > 1)
        ).all()
        if dups:
            problems.append(f"duplicate (node, name) pools: {[tuple(d) for d in dups]}")
        report.foreign_keys_checked = n_fks
        conn.rollback()
