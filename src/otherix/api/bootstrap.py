"""Start-up steps shared by ``serve`` and ``quickstart``: settings, secrets,
the data directory and its marker (``datadir``), store, migrations, seeds.
This is the composition root's toolbox."""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from otherix.api import datadir
from otherix.api.clock import SystemClock
from otherix.api.deps import Deps
from otherix.api.services.users import UserService
from otherix.api.settings import ApiSettings
from otherix.config import ConfigError, load_config
from otherix.store import Database
from otherix.store.clusterid import stored_cluster_id
from otherix.store.engine import display_url, sqlite_path
from otherix.store.migrate import upgrade
from otherix.store.ports.settings import CLUSTER_ID, DEFAULT_POOL_NAME

log = logging.getLogger("otherix.api")

BOOTSTRAP_USER = "OTHERIX_BOOTSTRAP_ADMIN_USERNAME"
BOOTSTRAP_PASSWORD = "OTHERIX_BOOTSTRAP_ADMIN_PASSWORD"  # noqa: S105 - a variable name


def load_settings(
    config_file: Path | None, env: Mapping[str, str], overrides: Mapping[str, Any]
) -> ApiSettings:
    return load_config(ApiSettings, config_file=config_file, env=env, overrides=overrides)


def jwt_secret(settings: ApiSettings) -> str:
    """The configured secret, or one generated once into ``{data_dir}/jwt-secret``."""
    if settings.auth.jwt_secret:
        return settings.auth.jwt_secret
    path = settings.data_dir / "jwt-secret"
    if path.exists():
        value = path.read_text().strip()
        if len(value) < 32:
            raise ConfigError(f"{path} holds a secret shorter than 32 bytes")
        return value
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
        fh.flush()
        os.fsync(fh.fileno())
    return value


def bootstrap_admin_from_env(env: Mapping[str, str]) -> tuple[str, str] | None:
    user, password = env.get(BOOTSTRAP_USER, ""), env.get(BOOTSTRAP_PASSWORD, "")
    if bool(user) != bool(password):
        raise ConfigError(f"set both {BOOTSTRAP_USER} and {BOOTSTRAP_PASSWORD}, or neither")
    if password and len(password) < 8:
        raise ConfigError(f"{BOOTSTRAP_PASSWORD} must be at least 8 characters")
    return (user, password) if user else None


def open_store(settings: ApiSettings, *, init: bool = False) -> tuple[Database, str | None]:
    """The data directory made ready (0700) and the database opened, after
    checking that it belongs to the cluster the directory's marker names
    (:class:`datadir.DataDirMismatch` otherwise; ``init`` accepts it as it is).
    Returns the database and the marker's cluster id (None: no marker yet)."""
    datadir.prepare(settings.data_dir)
    try:
        marker = datadir.read_marker(settings.data_dir)
    except datadir.DataDirMismatch:
        if not init:
            raise
        marker = None  # damaged: --init rewrites it
    db_file = sqlite_path(settings.database_url)
    check = marker is not None and not init
    if check and db_file is not None and not db_file.exists():
        assert marker is not None
        raise datadir.DataDirMismatch(datadir.missing_file(settings.data_dir, marker, db_file))
    if db_file is not None and not db_file.exists():
        datadir.set_aside_leftovers(db_file)  # a new database must not replay an old WAL
    db = Database(settings.database_url)
    try:
        if check:
            problem = datadir.mismatch(
                settings.data_dir,
                marker,
                stored_cluster_id(db),
                str(db_file) if db_file else display_url(settings.database_url),
            )
            if problem:
                raise datadir.DataDirMismatch(problem)
    except BaseException:
        db.close()
        raise
    return db, marker


def open_deps(settings: ApiSettings, *, migrate: bool = True, init: bool = False) -> Deps:
    """Everything a control plane is built from. It holds the data directory's
    shared lock (``datadir.hold_shared``, so no restore runs under it) from
    before the database is opened; :func:`close_deps` releases it."""
    datadir.prepare(settings.data_dir)
    held = datadir.hold_shared(settings.data_dir)
    try:
        db, marker = open_store(settings, init=init)
    except BaseException:
        held.release()
        raise
    try:
        if migrate:
            ran = upgrade(db, pause_at=settings.debug.pause_at)
            if ran:
                log.info("migrated the database: %s", ", ".join(s.revision for s in ran))
        deps = Deps(settings=settings, db=db, clock=SystemClock(), jwt_secret=jwt_secret(settings))
        deps.datadir_lock = held
        with db.write() as conn:
            now = deps.clock.now()
            # first start: the cluster default pool from config (never over an
            # admin's later set or unset), and the cluster's identity
            if not db.settings.has_setting(conn, DEFAULT_POOL_NAME):
                default = settings.storage_pools.default_pool_name
                db.settings.put_setting(conn, DEFAULT_POOL_NAME, default or None, now)
            deps.cluster_id = db.settings.ensure_setting(conn, CLUSTER_ID, str(uuid.uuid4()), now)
        if marker != deps.cluster_id:
            if marker is not None:
                log.warning(
                    "--init: data directory %s now belongs to cluster %s (it was %s)",
                    settings.data_dir,
                    deps.cluster_id,
                    marker,
                )
            datadir.write_marker(settings.data_dir, deps.cluster_id)
    except BaseException:
        db.close()
        held.release()
        raise
    return deps


def close_deps(deps: Deps) -> None:
    """Close the database, then release the data directory's lock."""
    deps.db.close()
    if deps.datadir_lock is not None:
        deps.datadir_lock.release()


def ensure_admin(users: UserService, admin: tuple[str, str] | None) -> None:
    if admin and users.ensure_bootstrap_admin(*admin):
        log.info("bootstrap admin %r created", admin[0])
