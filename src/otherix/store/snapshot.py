"""Copies of a whole database, and the checks a copy must pass: the store's half
of ``otherix-api backup`` and ``restore`` (``otherix.api.backup`` owns the
archive, the data-directory lock and the messages).

SQLite: :func:`sqlite_snapshot` takes a consistent copy of a live database with
sqlite3's online backup API (one step, under one read transaction, so the copy
is one committed state even while a server writes; a WAL reader never blocks
writers); :func:`sqlite_problems` runs ``integrity_check`` and
``foreign_key_check`` on a copy. PostgreSQL: ``pg_dump --format=custom`` and
``pg_restore --clean --if-exists`` found on PATH (:class:`ToolMissing`
otherwise), with the password handed over in ``PGPASSWORD``, never on the
command line. Schema revisions are Alembic's: :func:`known_revisions` is every
revision this code's migration scripts know, :func:`head_revision` the newest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from otherix.store.errors import StoreError
from otherix.store.migrate import MIGRATIONS_DIR
from otherix.store.ports.settings import CLUSTER_ID


class ToolMissing(StoreError):
    """``pg_dump`` or ``pg_restore`` is not on PATH."""


def _scripts() -> ScriptDirectory:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(cfg)


def known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def head_revision() -> str:
    head = _scripts().get_current_head()
    assert head is not None
    return head


# -- SQLite -------------------------------------------------------------------------


def _open_ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def sqlite_snapshot(db_file: Path, dest: Path) -> None:
    """A consistent copy of the live database ``db_file`` into the new file ``dest``,
    fsynced, in rollback-journal mode (one self-contained file)."""
    if not db_file.is_file():
        raise StoreError(f"the database file {db_file} does not exist")
    src = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # pages=-1: every page in one step, one read transaction
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot copy the database {db_file}: {exc}") from exc
    finally:
        src.close()
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scalar(conn: sqlite3.Connection, query: str, *args: str) -> str | None:
    row = conn.execute(query, args).fetchone()
    return None if row is None else str(row[0])


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows}


def sqlite_facts(path: Path) -> tuple[str | None, str | None]:
    """(schema revision, cluster id) of a SQLite file; None where it has none."""
    try:
        conn = _open_ro(path)
        try:
            tables = _tables(conn)
            revision = (
                _scalar(conn, "SELECT version_num FROM alembic_version")
                if "alembic_version" in tables
                else None
            )
            cluster = (
                _scalar(conn, "SELECT value FROM cluster_settings WHERE key = ?", CLUSTER_ID)
                if "cluster_settings" in tables
                else None
            )
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path} is not a readable SQLite database: {exc}") from exc
    if cluster is not None and cluster.startswith('"'):
        cluster = cluster.strip('"')  # the value column holds JSON text
    return revision, cluster


def sqlite_has_tables(path: Path) -> bool:
    """Whether ``path`` exists and holds at least one table."""
    if not path.exists():
        return False
    try:
        conn = _open_ro(path)
        try:
            return bool(_tables(conn))
        finally:
            conn.close()
    except sqlite3.Error:
        return True  # something is there that is not an empty database: not ours to replace


def sqlite_problems(path: Path) -> list[str]:
    """What ``PRAGMA integrity_check`` and ``foreign_key_check`` find; empty when sound."""
    try:
        conn = _open_ro(path)
        try:
            found = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
            problems = [] if found == ["ok"] else found
            for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check").fetchall():
                problems.append(f"row {rowid} of {table} names a missing {parent} row")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return [f"not a readable SQLite database: {exc}"]
    return problems[:20]


# -- PostgreSQL ---------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(
            f"{name} is not on PATH: install the PostgreSQL client tools "
            "(Debian: apt install postgresql-client) of the server's major version or newer"
        )
    return found


def _libpq(url_text: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and the environment that carries it."""
    url = sa.make_url(url_text)
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    bare = url.set(drivername="postgresql", password=None)
    return bare.render_as_string(hide_password=False), env


def _run(args: list[str], env: dict[str, str], what: str) -> str:
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError as exc:
        raise StoreError(f"{what} could not run: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-5:]
        raise StoreError(f"{what} failed (exit {done.returncode}): {' / '.join(detail)}")
    return done.stdout


def pg_dump(url_text: str, dest: Path) -> None:
    """``pg_dump --format=custom`` of the database into ``dest`` (one snapshot)."""
    uri, env = _libpq(url_text)
    args = [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges"]
    _run([*args, f"--file={dest}", f"--dbname={uri}"], env, "pg_dump")


def pg_check_archive(path: Path) -> set[str]:
    """``pg_restore --list``: the file is a custom-format dump pg_restore can read.
    Returns the names of the tables it creates."""
    listing = _run([_tool("pg_restore"), "--list", str(path)], dict(os.environ), "pg_restore")
    tables = set()
    for line in listing.splitlines():
        words = line.split()
        # "215; 1259 16390 TABLE public nodes owner"
        if len(words) >= 6 and not line.startswith(";") and words[3] == "TABLE":
            tables.add(words[5])
    return tables


def pg_restore(url_text: str, path: Path) -> None:
    """Restore a custom-format dump over the database, in one transaction."""
    uri, env = _libpq(url_text)
    args = [_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges"]
    args += ["--single-transaction", "--exit-on-error", f"--dbname={uri}", str(path)]
    _run(args, env, "pg_restore")


def _pg_engine(url_text: str) -> sa.Engine:
    url = sa.make_url(url_text)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


@dataclass(frozen=True)
class PgFacts:
    tables: set[str]
    revision: str | None
    cluster_id: str | None
    #: client sessions on the database other than ours
    others: int


def pg_facts(url_text: str) -> PgFacts:
    engine = _pg_engine(url_text)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            revision = cluster = None
            if "alembic_version" in tables:
                revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            if "cluster_settings" in tables:
                cluster = conn.execute(
                    sa.text("SELECT value FROM cluster_settings WHERE key = :k"), {"k": CLUSTER_ID}
                ).scalar()
            others = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                )
            ).scalar()
    except sa.exc.DBAPIError as exc:
        raise StoreError(f"cannot read the database: {exc.orig}") from exc
    finally:
        with contextlib.suppress(Exception):
            engine.dispose()
    return PgFacts(tables, revision, cluster.strip('"') if cluster else None, int(others or 0))


def pg_drop_tables(url_text: str, names: set[str]) -> None:
    """Drop these tables (after a restore: the ones a newer schema had and the backup has not)."""
    if not names:
        return
    engine = _pg_engine(url_text)
    try:
        with engine.begin() as conn:
            for name in sorted(names):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    except sa.exc.DBAPIError as exc:
        raise StoreError(f"cannot drop the tables {sorted(names)}: {exc.orig}") from exc
    finally:
        engine.dispose()
