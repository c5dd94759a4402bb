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
from dataclasses import dataclass

from otherix.api.clock import Clock
from otherix.api.deps import Principal
from otherix.api.services import secrets
from otherix.api.services.auth import user_view
from otherix.api.services.secrets import Passwords
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
from otherix.store import Database, UniqueViolation
from otherix.store.ports.users import ApiTokenRow, NewApiToken, NewUser, UserChange, UserStore


@dataclass(kw_only=True, eq=False)
class UserService:
    """The users service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    clock: Clock
    user_store: UserStore
    passwords: Passwords

    def create_user(self, body: UserCreate) -> User:
        now = self.clock.now()
        row = NewUser(
            id=str(uuid.uuid4()),
            username=body.username,
            password_hash=self.passwords.hash(body.password),
            role=str(body.role),
            created_at=now,
        )
        try:
            with self.db.write() as conn:
                self.user_store.insert_user(conn, row)
        except UniqueViolation as exc:
            raise Conflict(f"user {body.username!r} already exists", {"field": "username"}) from exc
        return User(
            id=row.id, username=row.username, role=body.role, created_at=now, updated_at=now
        )

    def ensure_bootstrap_admin(self, username: str, password: str) -> bool:
        """Create the admin if no user of that name exists; True when created."""
        with self.db.read() as conn:
            if self.user_store.get_user_by_name(conn, username) is not None:
                return False
        try:
            self.create_user(UserCreate(username=username, password=password, role=Role.ADMIN))
        except Conflict:
            return False  # another replica won the race
        return True

    def list_users(self) -> list[User]:
        with self.db.read() as conn:
            return [user_view(r) for r in self.user_store.list_users(conn)]

    def get_user(self, user_id: str) -> User:
        with self.db.read() as conn:
            row = self.user_store.get_user(conn, user_id) or self.user_store.get_user_by_name(
                conn, user_id
            )
        if row is None:
            raise NotFound(user_not_found(user_id))
        return user_view(row)

    def update_user(self, principal: Principal, user_id: str, body: UserUpdate) -> User:
        user = self.get_user(user_id)
        own = user.id == principal.user_id
        if own and body.role is not None and body.role != user.role:
            raise ValidationFailed("you cannot change your own role", {"field": "role"})
        if own and body.disabled:
            raise ValidationFailed("you cannot disable yourself", {"field": "disabled"})
        now = self.clock.now()
        values: UserChange = {"updated_at": now}
        end = False
        if body.password is not None:
            values["password_hash"] = self.passwords.hash(body.password)
            end = True
        if body.role is not None and body.role != user.role:
            values["role"] = str(body.role)
            end = True
        if body.disabled is not None and body.disabled != (user.disabled_at is not None):
            values["disabled_at"] = now if body.disabled else None
            end = end or bool(body.disabled)
        # Only one's own password change keeps a session: the one that made it.
        keep = principal.session_id if own and "role" not in values else None
        with self.db.write() as conn:
            if not self.user_store.update_user(conn, user.id, values):
                raise NotFound(user_not_found(user.username))
            if end:
                self.user_store.end_sessions(conn, user.id, now, keep_family=keep)
        return self.get_user(user.id)

    def delete_user(self, principal: Principal, user_id: str) -> None:
        user = self.get_user(user_id)
        if user.id == principal.user_id:
            raise ValidationFailed("you cannot delete yourself", {"field": "id"})
        with self.db.write() as conn:
            owned = self.user_store.count_owned_vms(conn, user.id)
            if owned:
                raise UserHasResources(details={"blocking_resources": {"vms": owned}})
            self.user_store.delete_user(conn, user.id)

    # API tokens ------------------------------------------------------------------

    def _token_owner(self, principal: Principal, user_ref: str) -> str:
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
        return self.get_user(user_ref).id

    def create_token(
        self, principal: Principal, user_ref: str, body: ApiTokenCreate
    ) -> ApiTokenCreated:
        owner = self._token_owner(principal, user_ref)
        now = self.clock.now()
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
        with self.db.write() as conn:
            self.user_store.insert_api_token(conn, row)
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

    def list_tokens(
        self, principal: Principal, user_ref: str, include_revoked: bool
    ) -> list[ApiToken]:
        owner = self._token_owner(principal, user_ref)
        with self.db.read() as conn:
            return [
                _token_view(r)
                for r in self.user_store.list_api_tokens(conn, owner, include_revoked)
            ]

    def revoke_token(self, principal: Principal, user_ref: str, token_id: str) -> None:
        owner = self._token_owner(principal, user_ref)
        with self.db.write() as conn:
            row = self.user_store.get_api_token(conn, token_id)
            if row is None or row.user_id != owner:
                listing = "otherix token list" + ("" if user_ref == "me" else f" --user {user_ref}")
                raise NotFound(not_found_message("API token", token_id, listing))
            self.user_store.revoke_api_token(conn, token_id, self.clock.now())

    def update_self(self, principal: Principal, body: SelfUpdate) -> User:
        """Change one's own password; any other field is refused with 403."""
        forbidden = sorted(body.model_extra or {})
        if forbidden:
            raise PermissionDenied(
                "you can only change your own password", {"forbidden_fields": forbidden}
            )
        return self.update_user(principal, principal.user_id, UserUpdate(password=body.password))


def user_not_found(ref: str) -> str:
    return not_found_message("user", ref, "otherix user list")


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
