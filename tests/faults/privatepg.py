"""A PostgreSQL server of the test's own, to stop and start at will.

The machine's shared PostgreSQL serves other test runs and must never be
stopped, so outage tests make their own: ``initdb`` into a temporary directory
(as the ``postgres`` user, which ``initdb`` requires), ``pg_ctl start`` on a
free loopback port with trust authentication, one database ``otherix``.
``stop()`` is the outage (``pg_ctl stop -m fast``: every session is cut),
``start()`` the recovery. Everything is removed on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

from support.server import free_port

BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(*args: str) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/otherix"

    def dsn(self, database: str = "otherix") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        _as_postgres(
            str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-N"
        )
        self.start()
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE otherix")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-o",
            opts,
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql)

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            return list(conn.execute(sql).fetchall())


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="otherix-pg-", dir="/tmp"))
    shutil.chown(root, "postgres", "postgres")
    pg = PrivatePostgres(root)
    try:
        pg.init()
        yield pg
    finally:
        if pg.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
