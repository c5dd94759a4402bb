"""The users aggregate: ``users`` with their auth columns, the refresh-token
families (sessions) and the API tokens, and the narrow user shape a bearer
token's resolution needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypedDict

from otherix.store.tx import Tx


@dataclass(frozen=True, slots=True)
class UserRow:
    """A whole ``users`` row, the password hash included."""

    id: str
    username: str
    username_lower: str
    password_hash: str
    role: str
    created_at: datetime
    updated_at: datetime
    #: bumped when the user's sessions end; a JWT or refresh token of an older one is refused
    session_epoch: int
    #: the refresh family that survived the last bump (one's own password change)
    kept_session_id: str | None
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class UserAuthRow:
    """What authenticating a bearer token needs of the user (one narrow
    primary-key read, no password hash)."""

    id: str
    username: str
    role: str
    session_epoch: int
    kept_session_id: str | None
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewUser:
    """A user to insert: ``updated_at`` is ``created_at``, epoch 0, enabled."""

    id: str
    username: str
    password_hash: str
    role: str
    created_at: datetime


class UserChange(TypedDict, total=False):
    """The columns an update of a user may set."""

    updated_at: datetime
    password_hash: str
    role: str
    disabled_at: datetime | None


@dataclass(frozen=True, slots=True)
class RefreshTokenRow:
    """A refresh token (stored as its sha256) of a session's family."""

    id: str
    user_id: str
    family_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    rotated_at: datetime | None
    revoked_at: datetime | None
    #: the user's session epoch when it was issued
    session_epoch: int


@dataclass(frozen=True, slots=True)
class NewRefreshToken:
    """A refresh token to insert: neither rotated nor revoked."""

    id: str
    user_id: str
    family_id: str
    token_hash: str
    created_at: datetime
    expires_at: datetime
    session_epoch: int


@dataclass(frozen=True, slots=True)
class ApiTokenRow:
    """An ``otx_`` API token (stored as its sha256)."""

    id: str
    user_id: str
    name: str
    prefix: str
    token_hash: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiToken:
    """An API token to insert: not revoked, never used."""

    id: str
    user_id: str
    name: str
    prefix: str
    token_hash: str
    created_at: datetime
    expires_at: datetime | None


class UserStore(Protocol):
    """Users, their sessions (refresh-token families) and their API tokens."""

    def insert_user(self, tx: Tx, user: NewUser) -> None: ...
    def get_user(self, tx: Tx, user_id: str) -> UserRow | None: ...
    def get_user_auth(self, tx: Tx, user_id: str) -> UserAuthRow | None: ...
    def get_user_by_name(self, tx: Tx, username: str) -> UserRow | None: ...
    def list_users(self, tx: Tx) -> list[UserRow]: ...
    def count_users(self, tx: Tx) -> int: ...
    def update_user(self, tx: Tx, user_id: str, change: UserChange) -> int: ...
    def end_sessions(
        self, tx: Tx, user_id: str, now: datetime, *, keep_family: str | None = None
    ) -> int: ...
    def count_owned_vms(self, tx: Tx, user_id: str) -> int: ...
    def delete_user(self, tx: Tx, user_id: str) -> int: ...
    def insert_refresh(self, tx: Tx, token: NewRefreshToken) -> None: ...
    def get_refresh_by_hash(self, tx: Tx, token_hash: str) -> RefreshTokenRow | None: ...
    def mark_refresh_rotated(self, tx: Tx, token_id: str, now: datetime) -> int: ...
    def revoke_refresh_family(self, tx: Tx, family_id: str, now: datetime) -> int: ...
    def revoke_user_refresh(self, tx: Tx, user_id: str, now: datetime) -> int: ...
    def insert_api_token(self, tx: Tx, token: NewApiToken) -> None: ...
    def get_api_token_by_hash(self, tx: Tx, token_hash: str) -> ApiTokenRow | None: ...
    def get_api_token(self, tx: Tx, token_id: str) -> ApiTokenRow | None: ...
    def list_api_tokens(self, tx: Tx, user_id: str, include_revoked: bool) -> list[ApiTokenRow]: ...
    def revoke_api_token(self, tx: Tx, token_id: str, now: datetime) -> int: ...
    def touch_api_token(self, tx: Tx, token_id: str, now: datetime) -> None: ...
