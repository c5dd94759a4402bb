"""Authentication: login, refresh rotation, logout, bearer-token resolution.

Access tokens are HS256 JWTs (``sub``, ``role``, ``iat``, ``exp``); refresh
tokens are opaque, stored as sha256, and rotated on every use. Presenting a
refresh token that was already rotated is treated as theft: its whole family
is revoked. ``otx_`` API tokens are stored as sha256 and never shown again.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import jwt

from otherix.api.deps import Deps, Principal
from otherix.api.services import secrets
from otherix.errors import InvalidCredentials, RateLimited, TokenRevoked, Unauthenticated
from otherix.models.auth import TokenPair, User
from otherix.rbac import Role
from otherix.store import users as q

ALGORITHM = "HS256"


def user_view(row: dict[str, Any]) -> User:
    return User.model_validate(row)


def _take_attempt(deps: Deps, key: str) -> None:
    """At most ``auth.login_rate_per_minute`` failed logins per username+client.

    An attempt counts as failed from the moment it starts (a success clears the
    count), and the check and the count are one step under a lock: parallel
    guesses cannot all pass the check before any of them is counted.
    """
    now = time.monotonic()
    with deps.login_lock:
        attempts = [t for t in deps.login_attempts.get(key, []) if t > now - 60]
        if len(attempts) >= deps.settings.auth.login_rate_per_minute:
            deps.login_attempts[key] = attempts
            raise RateLimited(
                "too many failed login attempts; retry in a minute", {"retry_after_seconds": 60}
            )
        attempts.append(now)
        deps.login_attempts[key] = attempts


def _issue(deps: Deps, user: dict[str, Any], family_id: str | None = None) -> TokenPair:
    now = deps.clock.now()
    ttl = int(deps.settings.auth.jwt_access_ttl)
    claims = {
        "sub": user["id"],
        "role": user["role"],
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + ttl,
    }
    access = jwt.encode(claims, deps.jwt_secret, algorithm=ALGORITHM)
    refresh = secrets.new_token()
    with deps.db.write() as conn:
        q.insert_refresh(
            conn,
            {
                "id": str(uuid.uuid4()),
                "user_id": user["id"],
                "family_id": family_id or str(uuid.uuid4()),
                "token_hash": secrets.digest(refresh),
                "created_at": now,
                "expires_at": now + timedelta(seconds=deps.settings.auth.jwt_refresh_ttl),
            },
        )
    return TokenPair(
        access_token=access, refresh_token=refresh, expires_in=ttl, user=user_view(user)
    )


def login(deps: Deps, username: str, password: str, client: str) -> TokenPair:
    key = f"{username.lower()}|{client}"
    _take_attempt(deps, key)
    with deps.db.read() as conn:
        user = q.get_user_by_name(conn, username)
    if not secrets.verify_password(user["password_hash"] if user else None, password):
        raise InvalidCredentials()
    assert user is not None
    with deps.login_lock:
        deps.login_attempts.pop(key, None)
    return _issue(deps, user)


def refresh(deps: Deps, token: str) -> TokenPair:
    now = deps.clock.now()
    with deps.db.write() as conn:
        row = q.get_refresh_by_hash(conn, secrets.digest(token))
        if row is None:
            raise Unauthenticated("invalid refresh token")
        if row["revoked_at"] is not None:
            raise TokenRevoked("refresh token has been revoked")
        if row["rotated_at"] is not None or not q.mark_refresh_rotated(conn, row["id"], now):
            q.revoke_refresh_family(conn, row["family_id"], now)
            reused = True
        else:
            reused = False
        user = q.get_user(conn, row["user_id"])
    if reused:
        raise TokenRevoked("refresh token was already used; all sessions of this login ended")
    if row["expires_at"] <= now or user is None:
        raise Unauthenticated("refresh token expired")
    return _issue(deps, user, family_id=row["family_id"])


def logout(deps: Deps, principal: Principal, token: str | None, all_sessions: bool) -> None:
    now = deps.clock.now()
    with deps.db.write() as conn:
        if all_sessions:
            q.revoke_user_refresh(conn, principal.user_id, now)
        elif token:
            row = q.get_refresh_by_hash(conn, secrets.digest(token))
            if row is not None and row["user_id"] == principal.user_id:
                q.revoke_refresh_family(conn, row["family_id"], now)


def authenticate(deps: Deps, token: str) -> Principal:
    """Resolve a bearer token (``otx_`` API token or JWT) to a principal, or raise 401."""
    now = deps.clock.now()
    if token.startswith(secrets.API_TOKEN_PREFIX):
        with deps.db.read() as conn:
            row = q.get_api_token_by_hash(conn, secrets.digest(token))
            user = q.get_user(conn, row["user_id"]) if row else None
        if row is None or user is None:
            raise Unauthenticated("invalid API token")
        if row["revoked_at"] is not None:
            raise TokenRevoked("API token has been revoked")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise Unauthenticated("API token has expired")
        last = row["last_used_at"]
        if last is None or (now - last).total_seconds() > 60:  # bounded write amplification
            with deps.db.write() as conn:
                q.touch_api_token(conn, row["id"], now)
        return Principal(user["id"], user["username"], Role(user["role"]), "api_token")
    try:
        claims = jwt.decode(
            token,
            deps.jwt_secret,
            algorithms=[ALGORITHM],
            # Time is checked below against deps.clock, not by PyJWT's wall clock
            # (its iat check rejects tokens from a replica whose clock runs ahead).
            options={
                "require": ["sub", "role", "exp", "iat"],
                "verify_exp": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise Unauthenticated("invalid access token") from exc
    if int(claims["exp"]) <= int(now.timestamp()):
        raise Unauthenticated("access token has expired; refresh or log in again")
    with deps.db.read() as conn:
        user = q.get_user(conn, str(claims["sub"]))
    if user is None:
        raise Unauthenticated("user no longer exists")
    try:
        role = Role(claims["role"])
    except ValueError as exc:
        raise Unauthenticated("invalid access token") from exc
    return Principal(user["id"], user["username"], role, "jwt")
