"""Users, refresh-token families and API tokens.

Called by ``api.services.auth`` (login, refresh, bearer resolution) and
``api.services.users`` (user and API-token management). Ending a user's
sessions (:func:`end_sessions`) is one statement pair in the caller's
transaction: the epoch bump refuses every access token issued before it, the
revocation every refresh token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from otherix.store.schema import api_tokens, refresh_tokens, users, vms
from otherix.store.tx import Tx, sql


def _one(tx: Tx, stmt: sa.Select[Any]) -> dict[str, Any] | None:
    row = sql(tx).execute(stmt).mappings().first()
    return dict(row) if row else None


def insert_user(tx: Tx, row: dict[str, Any]) -> None:
    sql(tx).execute(users.insert().values(**row))


def get_user(tx: Tx, user_id: str) -> dict[str, Any] | None:
    return _one(tx, sa.select(users).where(users.c.id == user_id))


#: what authenticating a bearer token needs of the user: one narrow primary-key read
_AUTH_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.role,
    users.c.session_epoch,
    users.c.kept_session_id,
    users.c.disabled_at,
)


def get_user_auth(tx: Tx, user_id: str) -> dict[str, Any] | None:
    return _one(tx, sa.select(*_AUTH_COLUMNS).where(users.c.id == user_id))


def end_sessions(tx: Tx, user_id: str, now: datetime, *, keep_family: str | None = None) -> int:
    """End every session of the user: the epoch moves on (access tokens issued
    before are refused) and every refresh token is revoked, except the refresh
    family ``keep_family`` (the session that changed its own password), which
    moves to the new epoch. Returns the new epoch (0: no such user)."""
    bumped = (
        sql(tx)
        .execute(
            users.update()
            .where(users.c.id == user_id)
            .values(session_epoch=users.c.session_epoch + 1, kept_session_id=keep_family)
            .returning(users.c.session_epoch)
        )
        .scalar_one_or_none()
    )
    if bumped is None:
        return 0
    live = sa.and_(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
    if keep_family is None:
        sql(tx).execute(refresh_tokens.update().where(live).values(revoked_at=now))
    else:
        kept = refresh_tokens.c.family_id == keep_family
        sql(tx).execute(refresh_tokens.update().where(live, ~kept).values(revoked_at=now))
        sql(tx).execute(refresh_tokens.update().where(live, kept).values(session_epoch=bumped))
    return int(bumped)


def get_user_by_name(tx: Tx, username: str) -> dict[str, Any] | None:
    return _one(tx, sa.select(users).where(users.c.username_lower == username.lower()))


def list_users(tx: Tx) -> list[dict[str, Any]]:
    rows = sql(tx).execute(sa.select(users).order_by(users.c.created_at, users.c.id)).mappings()
    return [dict(r) for r in rows]


def count_users(tx: Tx) -> int:
    return int(sql(tx).execute(sa.select(sa.func.count()).select_from(users)).scalar_one())


def update_user(tx: Tx, user_id: str, values: dict[str, Any]) -> int:
    return sql(tx).execute(users.update().where(users.c.id == user_id).values(**values)).rowcount


def count_owned_vms(tx: Tx, user_id: str) -> int:
    stmt = sa.select(sa.func.count()).select_from(vms).where(vms.c.owner_id == user_id)
    return int(sql(tx).execute(stmt).scalar_one())


def delete_user(tx: Tx, user_id: str) -> int:
    return sql(tx).execute(users.delete().where(users.c.id == user_id)).rowcount


# refresh tokens ------------------------------------------------------------


def insert_refresh(tx: Tx, row: dict[str, Any]) -> None:
    sql(tx).execute(refresh_tokens.insert().values(**row))


def get_refresh_by_hash(tx: Tx, token_hash: str) -> dict[str, Any] | None:
    return _one(tx, sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash))


def mark_refresh_rotated(tx: Tx, token_id: str, now: datetime) -> int:
    """Compare-and-set: only a not-yet-rotated, not revoked token can be rotated
    (one winner; a revocation committed meanwhile makes this a no-op)."""
    stmt = (
        refresh_tokens.update()
        .where(
            refresh_tokens.c.id == token_id,
            refresh_tokens.c.rotated_at.is_(None),
            refresh_tokens.c.revoked_at.is_(None),
        )
        .values(rotated_at=now)
    )
    return sql(tx).execute(stmt).rowcount


def revoke_refresh_family(tx: Tx, family_id: str, now: datetime) -> int:
    stmt = (
        refresh_tokens.update()
        .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return sql(tx).execute(stmt).rowcount


def revoke_user_refresh(tx: Tx, user_id: str, now: datetime) -> int:
    stmt = (
        refresh_tokens.update()
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return sql(tx).execute(stmt).rowcount


# API tokens ----------------------------------------------------------------


def insert_api_token(tx: Tx, row: dict[str, Any]) -> None:
    sql(tx).execute(api_tokens.insert().values(**row))


def get_api_token_by_hash(tx: Tx, token_hash: str) -> dict[str, Any] | None:
    return _one(tx, sa.select(api_tokens).where(api_tokens.c.token_hash == token_hash))


def get_api_token(tx: Tx, token_id: str) -> dict[str, Any] | None:
    return _one(tx, sa.select(api_tokens).where(api_tokens.c.id == token_id))


def list_api_tokens(tx: Tx, user_id: str, include_revoked: bool) -> list[dict[str, Any]]:
    stmt = sa.select(api_tokens).where(api_tokens.c.user_id == user_id)
    if not include_revoked:
        stmt = stmt.where(api_tokens.c.revoked_at.is_(None))
    rows = sql(tx).execute(stmt.order_by(api_tokens.c.created_at, api_tokens.c.id)).mappings()
    return [dict(r) for r in rows]


def revoke_api_token(tx: Tx, token_id: str, now: datetime) -> int:
    stmt = (
        api_tokens.update()
        .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return sql(tx).execute(stmt).rowcount


def touch_api_token(tx: Tx, token_id: str, now: datetime) -> None:
    sql(tx).execute(api_tokens.update().where(api_tokens.c.id == token_id).values(last_used_at=now))
