"""The session epoch in the store: what migration 0005 (sessions) does to old rows,
and what authenticating a JWT costs (one narrow read), on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from otherix.api.compose import build_services
from otherix.api.deps import Deps
from otherix.api.services.auth import AuthService
from otherix.api.services.users import UserService
from otherix.api.settings import ApiSettings
from otherix.config import load_config
from otherix.errors import TokenRevoked
from otherix.models.auth import SelfUpdate, UserCreate, UserUpdate
from otherix.rbac import Role
from otherix.store import Database
from otherix.store.migrate import upgrade
from otherix.store.ports.users import UserRow
from otherix.store.users import store as q
from support.clock import FakeClock
from support.server import CHEAP_PASSWORD_HASHING

NOW = datetime(2026, 12, 9, 12, 0, tzinfo=UTC)


def test_0005_keeps_old_users_and_refresh_tokens_valid(fresh_db, tmp_path):
    upgrade(fresh_db, "0002")
    with fresh_db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (id, username, username_lower, password_hash, role,"
                " created_at, updated_at) VALUES ('u1', 'Old', 'old', 'x', 'developer', :t, :t)"
            ),
            {"t": NOW},
        )
        conn.execute(
            sa.text(
                "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, created_at,"
                " expires_at) VALUES ('r1', 'u1', 'f1', :h, :t, :e)"
            ),
            {"h": "0" * 64, "t": NOW, "e": NOW + timedelta(days=30)},
        )
    upgrade(fresh_db)
    with fresh_db.engine.connect() as conn:
        user = conn.execute(sa.text("SELECT * FROM users")).mappings().one()
        token = conn.execute(sa.text("SELECT * FROM refresh_tokens")).mappings().one()
    assert (user["session_epoch"], user["kept_session_id"], user["disabled_at"]) == (0, None, None)
    assert token["session_epoch"] == 0  # an old refresh token still matches the user's epoch


def _services(db: Database, tmp_path) -> tuple[AuthService, UserService]:
    settings = load_config(ApiSettings, overrides={"data_dir": tmp_path, **CHEAP_PASSWORD_HASHING})
    built = build_services(
        Deps(settings=settings, db=db, clock=FakeClock(NOW), jwt_secret="s" * 48)
    )
    return built.auth_service, built.user_service


def test_authenticating_a_jwt_is_one_narrow_read(fresh_db, tmp_path):
    upgrade(fresh_db)
    auth, users = _services(fresh_db, tmp_path)
    user = users.create_user(UserCreate(username="dev", password="pass-word-1"))
    pair = auth._issue(_row(fresh_db, user.id))
    statements: list[str] = []

    def spy(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
            statements.append(statement)

    event.listen(fresh_db.engine, "before_cursor_execute", spy)
    try:
        principal = auth.authenticate(pair.access_token)
    finally:
        event.remove(fresh_db.engine, "before_cursor_execute", spy)
    assert principal.user_id == user.id
    assert principal.session_id is not None
    [select] = statements
    assert "password_hash" not in select
    assert "FROM users" in select
    assert "WHERE users.id =" in select


def test_an_epoch_bump_refuses_the_old_jwt_and_keeps_the_named_family(fresh_db, tmp_path):
    upgrade(fresh_db)
    auth, users = _services(fresh_db, tmp_path)
    admin = users.create_user(UserCreate(username="boss", password="pass-word-1", role=Role.ADMIN))
    dev = users.create_user(UserCreate(username="dev2", password="pass-word-1"))
    row = _row(fresh_db, dev.id)
    kept, other = auth._issue(row), auth._issue(row)
    me = auth.authenticate(kept.access_token)
    users.update_self(me, SelfUpdate(password="pass-word-2"))
    assert auth.authenticate(kept.access_token).user_id == dev.id
    with pytest.raises(TokenRevoked):
        auth.authenticate(other.access_token)
    boss = auth.authenticate(auth._issue(_row(fresh_db, admin.id)).access_token)
    users.update_user(boss, dev.id, UserUpdate(password="pass-word-3"))
    with pytest.raises(TokenRevoked):
        auth.authenticate(kept.access_token)  # an admin's reset keeps nothing


def _row(db: Database, user_id: str) -> UserRow:
    with db.read() as conn:
        row = q.get_user(conn, user_id)
    assert row is not None
    return row
