"""Start-up steps shared by ``serve`` and ``quickstart``: settings, secrets,
store, migrations, seeds. This is the composition root's toolbox."""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from otherix.api.clock import SystemClock
from otherix.api.deps import Deps
from otherix.api.services import defaultpool, users
from otherix.api.settings import ApiSettings
from otherix.config import ConfigError, load_config
from otherix.store import Database
from otherix.store import settings as qs
from otherix.store.migrate import upgrade

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


def open_deps(settings: ApiSettings, *, migrate: bool = True) -> Deps:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    if migrate:
        upgrade(db)
    deps = Deps(settings=settings, db=db, clock=SystemClock(), jwt_secret=jwt_secret(settings))
    defaultpool.seed(deps)
    with db.write() as conn:
        deps.cluster_id = qs.ensure_setting(
            conn, qs.CLUSTER_ID, str(uuid.uuid4()), deps.clock.now()
        )
    return deps


def ensure_admin(deps: Deps, admin: tuple[str, str] | None) -> None:
    if admin and users.ensure_bootstrap_admin(deps, *admin):
        log.info("bootstrap admin %r created", admin[0])
