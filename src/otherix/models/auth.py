"""Wire models for login, users and API tokens (docs/pool-contract.md §2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field, StrictBool

from otherix.models.common import Input, Output
from otherix.rbac import Role


class LoginRequest(Input):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(Input):
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutRequest(Input):
    refresh_token: str | None = None
    all_sessions: StrictBool = False


class User(Output):
    id: str
    username: str
    role: Role
    disabled_at: datetime | None = Field(
        default=None, description="when an admin disabled the user; null: enabled"
    )
    created_at: datetime
    updated_at: datetime


class UserCreate(Input):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    password: str = Field(min_length=8, max_length=1024)
    role: Role = Role.VIEWER


class UserUpdate(Input):
    """``PATCH /v1/users/{id}`` (admin). A new password, a new role and
    ``disabled: true`` each end every session of the user (docs/architecture.md)."""

    password: str | None = Field(default=None, min_length=8, max_length=1024)
    role: Role | None = None
    disabled: StrictBool | None = Field(
        default=None,
        description="true: the user can no longer log in, refresh or use API tokens",
    )


class SelfUpdate(Input):
    """``PATCH /v1/users/me``: a user may change their own password only."""

    model_config = ConfigDict(extra="allow")
    password: str = Field(min_length=8, max_length=1024)


class TokenPair(Output):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user: User


class ApiToken(Output):
    id: str
    user_id: str
    name: str
    prefix: str
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


def _storable(value: datetime) -> datetime:
    """The store keeps times in UTC: one that has no UTC form (9999-12-31T23:00-05:00
    is in year 10000 there) is out of range, not a 500 when it is written."""
    try:
        value.astimezone(UTC)
    except OverflowError as exc:
        msg = "time is out of range (it must fall within years 1 to 9999 in UTC)"
        raise ValueError(msg) from exc
    return value


#: an aware time the store can hold (a naive time is ambiguous, and not comparable)
StorableTime = Annotated[AwareDatetime, AfterValidator(_storable)]


class ApiTokenCreate(Input):
    name: str = Field(min_length=1, max_length=100)
    expires_at: StorableTime | None = None


class ApiTokenCreated(ApiToken):
    token: str
