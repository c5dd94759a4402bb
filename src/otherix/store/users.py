"""Users, refresh-token families and API tokens.

``SqlUsers`` implements ``ports.users.UserStore`` and speaks its frozen rows.
Called by ``api.services.auth`` (login, refresh, bearer resolution) and
``api.services.users`` (user and API-token management). Ending a user's
sessions (:meth:`SqlUsers.end_sessions`) is one statement pair in the caller's
transaction: the epoch bump refuses every access token issued before it, the
revocation every refresh token.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from otherix.store.ports.users import (
    ApiTokenRow,
    NewApiToken,
    NewRefreshToken,
    NewUser,
    RefreshTokenRow,
    UserAuthRow,
    UserChange,
    UserRow,
    UserStore,
)
from otherix.store.schema import api_tokens, refresh_tokens, users, vms
from otherix.store.tx import Tx, sql


def _first(tx: Tx, stmt: sa.Select[Any]) -> RowMapping | None:
    return sql(tx).execute(stmt).mappings().first()


#: what authenticating a bearer token needs of the user: one narrow primary-key read
_AUTH_COLUMNS = (
    users.c.id,
    users.c.username,
    users.c.role,
    users.c.session_epoch,
    users.c.kept_session_id,
    users.c.disabled_at,
)


class SqlUsers:
    """:class:`UserStore` in SQLAlchemy Core, for both backends."""

    def insert_user(self, tx: Tx, user: NewUser) -> None:
        sql(tx).execute(
            users.insert().values(
                id=user.id,
                username=user.username,
                username_lower=user.username.lower(),
                password_hash=user.password_hash,
                role=user.role,
                created_at=user.created_at,
                updated_at=user.created_at,
            )
        )

    def get_user(self, tx: Tx, user_id: str) -> UserRow | None:
        row = _first(tx, sa.select(users).where(users.c.id == user_id))
        return UserRow(**row) if row else None

    def get_user_auth(self, tx: Tx, user_id: str) -> UserAuthRow | None:
        row = _first(tx, sa.select(*_AUTH_COLUMNS).where(users.c.id == user_id))
        return UserAuthRow(**row) if row else None

    def end_sessions(
        self, tx: Tx, user_id: str, now: datetime, *, keep_family: str | None = None
    ) -> int:
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

    def get_user_by_name(self, tx: Tx, username: str) -> UserRow | None:
        row = _first(tx, sa.select(users).where(users.c.username_lower == username.lower()))
        return UserRow(**row) if row else None

    def list_users(self, tx: Tx) -> list[UserRow]:
        stmt = sa.select(users).order_by(users.c.created_at, users.c.id)
        return [UserRow(**r) for r in sql(tx).execute(stmt).mappings()]

    def count_users(self, tx: Tx) -> int:
        return int(sql(tx).execute(sa.select(sa.func.count()).select_from(users)).scalar_one())

    def update_user(self, tx: Tx, user_id: str, change: UserChange) -> int:
        stmt = users.update().where(users.c.id == user_id).values(**change)
        return sql(tx).execute(stmt).rowcount

    def count_owned_vms(self, tx: Tx, user_id: str) -> int:
        stmt = sa.select(sa.func.count()).select_from(vms).where(vms.c.owner_id == user_id)
        return int(sql(tx).execute(stmt).scalar_one())

    def delete_user(self, tx: Tx, user_id: str) -> int:
        return sql(tx).execute(users.delete().where(users.c.id == user_id)).rowcount

    # refresh tokens --------------------------------------------------------

    def insert_refresh(self, tx: Tx, token: NewRefreshToken) -> None:
        sql(tx).execute(
            refresh_tokens.insert().values(
                id=token.id,
                user_id=token.user_id,
                family_id=token.family_id,
                token_hash=token.token_hash,
                created_at=token.created_at,
                expires_at=token.expires_at,
                session_epoch=token.session_epoch,
            )
        )

    def get_refresh_by_hash(self, tx: Tx, token_hash: str) -> RefreshTokenRow | None:
        stmt = sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
        row = _first(tx, stmt)
        return RefreshTokenRow(**row) if row else None

    def mark_refresh_rotated(self, tx: Tx, token_id: str, now: datetime) -> int:
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

    def revoke_refresh_family(self, tx: Tx, family_id: str, now: datetime) -> int:
        stmt = (
            refresh_tokens.update()
            .where(refresh_tokens.c.family_id == family_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return sql(tx).execute(stmt).rowcount

    def revoke_user_refresh(self, tx: Tx, user_id: str, now: datetime) -> int:
        stmt = (
            refresh_tokens.update()
            .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return sql(tx).execute(stmt).rowcount

    # API tokens ------------------------------------------------------------

    def insert_api_token(self, tx: Tx, token: NewApiToken) -> None:
        sql(tx).execute(
            api_tokens.insert().values(
                id=token.id,
                user_id=token.user_id,
                name=token.name,
                prefix=token.prefix,
                token_hash=token.token_hash,
                created_at=token.created_at,
                expires_at=token.expires_at,
            )
        )

    def get_api_token_by_hash(self, tx: Tx, token_hash: str) -> ApiTokenRow | None:
        row = _first(tx, sa.select(api_tokens).where(api_tokens.c.token_hash == token_hash))
        return ApiTokenRow(**row) if row else None

    def get_api_token(self, tx: Tx, token_id: str) -> ApiTokenRow | None:
        row = _first(tx, sa.select(api_tokens).where(api_tokens.c.id == token_id))
        return ApiTokenRow(**row) if row else None

    def list_api_tokens(self, tx: Tx, user_id: str, include_revoked: bool) -> list[ApiTokenRow]:
        stmt = sa.select(api_tokens).where(api_tokens.c.user_id == user_id)
        if not include_revoked:
            stmt = stmt.where(api_tokens.c.revoked_at.is_(None))
        rows = sql(tx).execute(stmt.order_by(api_tokens.c.created_at, api_tokens.c.id)).mappings()
        return [ApiTokenRow(**r) for r in rows]

    def revoke_api_token(self, tx: Tx, token_id: str, now: datetime) -> int:
        stmt = (
            api_tokens.update()
            .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return sql(tx).execute(stmt).rowcount

    def touch_api_token(self, tx: Tx, token_id: str, now: datetime) -> None:
        stmt = api_tokens.update().where(api_tokens.c.id == token_id).values(last_used_at=now)
        sql(tx).execute(stmt)


#: The one instance (stateless). ``Database.users`` is this; services that are
#: not handed a store yet import it as ``q``/``qu``.
store: UserStore = SqlUsers()
