"""Users and their API tokens; the bootstrap admin.

Called by ``routes/auth.py`` and by the composition root (bootstrap admin).

Changing a credential ends the user's sessions in the same transaction
(``store.users.end_sessions``): a new password (an admin's reset or one's own
change), a new role, and ``disabled: true``. One's own password change keeps
the session that made it (its refresh family moves to the new epoch), so a
mistyped new password can be changed again; every other session ends. An
admin cannot change their own role or disable themselves (nor delete
themselves), so there is always someone left to undo a mistake. API tokens
survive a password change (as GitHub keeps personal access tokens); a
disabled user's API tokens are refused until the user is enabled again.
"""

from __future__ import annotations

import uuid

from otherix.api.deps import Deps, Principal
from otherix.api.services import secrets
from otherix.api.services.auth import user_view
from otherix.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    UserHasResources,
    ValidationFailed,
    not_found_message,
    quoted,
)
from otherix.models.auth import (
    ApiToken,
    ApiTokenCreate,
    ApiTokenCreated,
    SelfUpdate,
    User,
    UserCreate,
    UserUpdate,
)
from otherix.rbac import Permission, Role, Scope
from otherix.store import UniqueViolation
from otherix.store.ports.users import ApiTokenRow, NewApiToken, NewUser, UserChange
from otherix.store.users import store as q


def create_user(deps: Deps, body: UserCreate) -> User:
    now = deps.clock.now()
    row = NewUser(
        id=str(uuid.uuid4()),
        username=body.username,
        password_hash=secrets.hash_password(body.password),
        role=str(body.role),
        created_at=now,
    )
    try:
        with deps.db.write() as conn:
            q.insert_user(conn, row)
    except UniqueViolation as exc:
        raise Conflict(f"user {body.username!r} already exists", {"field": "username"}) from exc
    return User(id=row.id, username=row.username, role=body.role, created_at=now, updated_at=now)


def ensure_bootstrap_admin(deps: Deps, username: str, password: str) -> bool:
    """Create the admin if no user of that name exists; True when created."""
    with deps.db.read() as conn:
        if q.get_user_by_name(conn, username) is not None:
            return False
    try:
        create_user(deps, UserCreate(username=username, password=password, role=Role.ADMIN))
    except Conflict:
        return False  # another replica won the race
    return True


def user_not_found(ref: str) -> str:
    return not_found_message("user", ref, "otherix user list")


def list_users(deps: Deps) -> list[User]:
    with deps.db.read() as conn:
        return [user_view(r) for r in q.list_users(conn)]


def get_user(deps: Deps, user_id: str) -> User:
    with deps.db.read() as conn:
        row = q.get_user(conn, user_id) or q.get_user_by_name(conn, user_id)
    if row is None:
        raise NotFound(user_not_found(user_id))
    return user_view(row)


def update_user(deps: Deps, principal: Principal, user_id: str, body: UserUpdate) -> User:
    user = get_user(deps, user_id)
    own = user.id == principal.user_id
    if own and body.role is not None and body.role != user.role:
        raise ValidationFailed("you cannot change your own role", {"field": "role"})
    if own and body.disabled:
        raise ValidationFailed("you cannot disable yourself", {"field": "disabled"})
    now = deps.clock.now()
    values: UserChange = {"updated_at": now}
    end = False
    if body.password is not None:
        values["password_hash"] = secrets.hash_password(body.password)
        end = True
    if body.role is not None and body.role != user.role:
        values["role"] = str(body.role)
        end = True
    if body.disabled is not None and body.disabled != (user.disabled_at is not None):
        values["disabled_at"] = now if body.disabled else None
        end = end or bool(body.disabled)
    # Only one's own password change keeps a session: the one that made it.
    keep = principal.session_id if own and "role" not in values else None
    with deps.db.write() as conn:
        if not q.update_user(conn, user.id, values):
            raise NotFound(user_not_found(user.username))
        if end:
            q.end_sessions(conn, user.id, now, keep_family=keep)
    return get_user(deps, user.id)


def delete_user(deps: Deps, principal: Principal, user_id: str) -> None:
    user = get_user(deps, user_id)
    if user.id == principal.user_id:
        raise ValidationFailed("you cannot delete yourself", {"field": "id"})
    with deps.db.write() as conn:
        owned = q.count_owned_vms(conn, user.id)
        if owned:
            raise UserHasResources(details={"blocking_resources": {"vms": owned}})
        q.delete_user(conn, user.id)


# API tokens ------------------------------------------------------------------


def _token_owner(deps: Deps, principal: Principal, user_ref: str) -> str:
    """``me`` or a user id; someone else's tokens are invisible (404) without ``any``."""
    if user_ref == "me":
        return principal.user_id
    if principal.scope(Permission.API_TOKEN_MANAGE) is not Scope.ANY:
        if user_ref != principal.user_id:
            raise NotFound(
                f"user {quoted(user_ref)} not found; "
                "you can manage only your own tokens (--user me)"
            )
        return user_ref
    return get_user(deps, user_ref).id


def create_token(
    deps: Deps, principal: Principal, user_ref: str, body: ApiTokenCreate
) -> ApiTokenCreated:
    owner = _token_owner(deps, principal, user_ref)
    now = deps.clock.now()
    if body.expires_at is not None and body.expires_at <= now:
        raise ValidationFailed("expires_at must be in the future", {"field": "expires_at"})
    token = secrets.new_token(secrets.API_TOKEN_PREFIX)
    row = NewApiToken(
        id=str(uuid.uuid4()),
        user_id=owner,
        name=body.name,
        prefix=token[:8],
        token_hash=secrets.digest(token),
        created_at=now,
        expires_at=body.expires_at,
    )
    with deps.db.write() as conn:
        q.insert_api_token(conn, row)
    return ApiTokenCreated(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        last_used_at=None,
        expires_at=row.expires_at,
        revoked_at=None,
        created_at=row.created_at,
        token=token,
    )


def _token_view(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        id=row.id,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        created_at=row.created_at,
    )


def list_tokens(
    deps: Deps, principal: Principal, user_ref: str, include_revoked: bool
) -> list[ApiToken]:
    owner = _token_owner(deps, principal, user_ref)
    with deps.db.read() as conn:
        return [_token_view(r) for r in q.list_api_tokens(conn, owner, include_revoked)]


def revoke_token(deps: Deps, principal: Principal, user_ref: str, token_id: str) -> None:
    owner = _token_owner(deps, principal, user_ref)
    with deps.db.write() as conn:
        row = q.get_api_token(conn, token_id)
        if row is None or row.user_id != owner:
            listing = "otherix token list" + ("" if user_ref == "me" else f" --user {user_ref}")
            raise NotFound(not_found_message("API token", token_id, listing))
        q.revoke_api_token(conn, token_id, deps.clock.now())


def update_self(deps: Deps, principal: Principal, body: SelfUpdate) -> User:
    """Change one's own password; any other field is refused with 403."""
    forbidden = sorted(body.model_extra or {})
    if forbidden:
        raise PermissionDenied(
            "you can only change your own password", {"forbidden_fields": forbidden}
        )
    return update_user(deps, principal, principal.user_id, UserUpdate(password=body.password))
