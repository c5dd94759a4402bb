"""Authentication: login, refresh rotation, logout, bearer-token resolution.

Called by ``routes/auth.py`` (login, refresh, logout) and by the route guard
(``guards.require`` -> :func:`authenticate`) on every authenticated request.

Access tokens are HS256 JWTs (``sub``, ``role``, ``iat``, ``exp``, ``sid`` the
refresh family of the session, ``sep`` the user's session epoch); refresh
tokens are opaque, stored as sha256 with the epoch they were issued in, and
rotated on every use. Presenting a refresh token that was already rotated is
treated as theft: its whole family is revoked. ``otx_`` API tokens are stored
as sha256 and never shown again.

Sessions end with the credential: a password change or reset, a role change
and a disable bump the user's session epoch (``store.users.end_sessions``), so
every access token and refresh token issued before is refused (401
``token_revoked``) at its next use; a user's own password change keeps the
session that made it (``users.kept_session_id``). Resolving a JWT is one
primary-key read of six user columns. API tokens are not sessions: they
survive a password change and take a role change at the next request; a
disabled user's API tokens are refused (401 ``account_disabled``).

Logins go through the ``LoginGuard`` it is given (``api/loginguard.py``): the failed-login
windows, then the bounded password-hash queue, in a worker thread.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio.to_thread
import jwt

from otherix.api.clock import Clock
from otherix.api.deps import Principal
from otherix.api.loginguard import LoginGuard
from otherix.api.services import secrets
from otherix.api.services.secrets import Passwords
from otherix.api.settings import ApiSettings
from otherix.errors import (
    AccountDisabled,
    InvalidCredentials,
    RateLimited,
    TokenRevoked,
    Unauthenticated,
)
from otherix.models.auth import TokenPair, User
from otherix.rbac import Role
from otherix.store import Database
from otherix.store.ports.users import NewRefreshToken, UserAuthRow, UserRow, UserStore

ALGORITHM = "HS256"
SESSION_ENDED = "this session has ended (the password, role or account changed); log in again"


def user_view(row: UserRow) -> User:
    return User(
        id=row.id,
        username=row.username,
        role=Role(row.role),
        disabled_at=row.disabled_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@dataclass(kw_only=True, eq=False)
class AuthService:
    """The auth service, built once by ``api/compose.py`` with the collaborators below."""

    settings: ApiSettings
    db: Database
    clock: Clock
    jwt_secret: str
    logins: LoginGuard
    user_store: UserStore
    passwords: Passwords

    def _issue(self, user: UserRow, family_id: str | None = None) -> TokenPair:
        now = self.clock.now()
        ttl = int(self.settings.auth.jwt_access_ttl)
        family = family_id or str(uuid.uuid4())
        claims = {
            "sub": user.id,
            "role": user.role,
            "iat": int(now.timestamp()),
            "exp": int(now.timestamp()) + ttl,
            "sid": family,
            "sep": user.session_epoch,
        }
        access = jwt.encode(claims, self.jwt_secret, algorithm=ALGORITHM)
        refresh = secrets.new_token()
        with self.db.write() as conn:
            self.user_store.insert_refresh(
                conn,
                NewRefreshToken(
                    id=str(uuid.uuid4()),
                    user_id=user.id,
                    family_id=family,
                    token_hash=secrets.digest(refresh),
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.settings.auth.jwt_refresh_ttl),
                    session_epoch=user.session_epoch,
                ),
            )
        return TokenPair(
            access_token=access, refresh_token=refresh, expires_in=ttl, user=user_view(user)
        )

    def _check_password(self, username: str, password: str) -> UserRow | None:
        """The user when the password is right; None otherwise (an unknown name
        costs one verification too). Runs in a hash worker thread."""
        with self.db.read() as conn:
            user = self.user_store.get_user_by_name(conn, username)
        ok = self.passwords.verify(user.password_hash if user else None, password)
        return user if ok else None

    async def login(self, username: str, password: str, client: str) -> TokenPair:
        """Check the failed-login windows, verify the password in the bounded hash
        queue, issue a token pair. ``client`` is the address from ``api.forwarded``."""
        guard = self.logins
        attempt = guard.admit(username, client)
        try:
            user = await guard.run_hash(lambda: self._check_password(username, password), client)
        except RateLimited:
            raise  # the queue refused: the attempt counts (a flood fills its own window)
        except BaseException:
            guard.refund(attempt)  # the store failed or the request went: nothing was learnt
            raise
        if user is None:
            raise InvalidCredentials()
        guard.succeeded(attempt)
        if user.disabled_at is not None:
            raise AccountDisabled()
        return await anyio.to_thread.run_sync(self._issue, user)

    def refresh(self, token: str) -> TokenPair:
        now = self.clock.now()
        with self.db.write() as conn:
            row = self.user_store.get_refresh_by_hash(conn, secrets.digest(token))
            if row is None:
                raise Unauthenticated("invalid refresh token")
            if row.revoked_at is not None:
                raise TokenRevoked("refresh token has been revoked")
            reused = False
            if row.rotated_at is not None:
                reused = True
            elif not self.user_store.mark_refresh_rotated(conn, row.id, now):
                # Lost a race: to another refresh (reuse) or to a revocation (session ended).
                current = self.user_store.get_refresh_by_hash(conn, row.token_hash) or row
                if current.revoked_at is not None:
                    raise TokenRevoked("refresh token has been revoked")
                reused = True
            if reused:
                self.user_store.revoke_refresh_family(conn, row.family_id, now)
            user = self.user_store.get_user(conn, row.user_id)
        if reused:
            raise TokenRevoked("refresh token was already used; all sessions of this login ended")
        if row.expires_at <= now or user is None:
            raise Unauthenticated("refresh token expired")
        if user.disabled_at is not None:
            raise AccountDisabled()
        if row.session_epoch != user.session_epoch:
            raise TokenRevoked(SESSION_ENDED)
        return self._issue(user, family_id=row.family_id)

    def logout(self, principal: Principal, token: str | None, all_sessions: bool) -> None:
        now = self.clock.now()
        with self.db.write() as conn:
            if all_sessions:
                self.user_store.revoke_user_refresh(conn, principal.user_id, now)
            elif token:
                row = self.user_store.get_refresh_by_hash(conn, secrets.digest(token))
                if row is not None and row.user_id == principal.user_id:
                    self.user_store.revoke_refresh_family(conn, row.family_id, now)

    def _api_token(self, token: str) -> Principal:
        now = self.clock.now()
        with self.db.read() as conn:
            row = self.user_store.get_api_token_by_hash(conn, secrets.digest(token))
            user = self.user_store.get_user_auth(conn, row.user_id) if row else None
        if row is None or user is None:
            raise Unauthenticated("invalid API token")
        if row.revoked_at is not None:
            raise TokenRevoked("API token has been revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthenticated("API token has expired")
        if user.disabled_at is not None:
            raise AccountDisabled()
        last = row.last_used_at
        if last is None or (now - last).total_seconds() > 60:  # bounded write amplification
            with self.db.write() as conn:
                self.user_store.touch_api_token(conn, row.id, now)
        return Principal(user.id, user.username, Role(user.role), "api_token")

    def authenticate(self, token: str) -> Principal:
        """Resolve a bearer token (``otx_`` API token or JWT) to a principal, or raise 401."""
        if token.startswith(secrets.API_TOKEN_PREFIX):
            return self._api_token(token)
        now = self.clock.now()
        try:
            claims = jwt.decode(
                token,
                self.jwt_secret,
                algorithms=[ALGORITHM],
                # Time is checked below against deps.clock, not by PyJWT's wall clock
                # (its iat check rejects tokens from a replica whose clock runs ahead).
                options={
                    "require": ["sub", "role", "exp", "iat"],
                    "verify_exp": False,
                    "verify_iat": False,
                },
            )
            Role(claims["role"])
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthenticated("invalid access token") from exc
        if int(claims["exp"]) <= int(now.timestamp()):
            raise Unauthenticated("access token has expired; refresh or log in again")
        with self.db.read_one() as conn:
            user = self.user_store.get_user_auth(conn, str(claims["sub"]))
        if user is None:
            raise Unauthenticated("user no longer exists")
        if user.disabled_at is not None:
            raise AccountDisabled()
        if not _session_alive(claims, user):
            raise TokenRevoked(SESSION_ENDED)
        # The role is the user's current one (a role change also ends the session).
        sid = claims.get("sid")
        return Principal(
            user.id,
            user.username,
            Role(user.role),
            "jwt",
            session_id=sid if isinstance(sid, str) else None,
        )


def _session_alive(claims: dict[str, Any], user: UserAuthRow) -> bool:
    """The token's epoch is the user's, or it belongs to the session the last
    bump kept (the one that changed its own password)."""
    epoch, sid = claims.get("sep"), claims.get("sid")
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch == user.session_epoch:
        return True
    return isinstance(sid, str) and sid == user.kept_session_id
