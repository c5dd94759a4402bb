"""``/v1/auth/*``, ``/v1/users`` and API tokens (docs/pool-contract.md §2)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from otherix.api import forwarded
from otherix.api.deps import Deps, Principal
from otherix.api.guards import public, require
from otherix.api.provide import get_auth_service, get_deps, get_user_service
from otherix.api.services.auth import AuthService
from otherix.api.services.users import UserService
from otherix.models.auth import (
    ApiToken,
    ApiTokenCreate,
    ApiTokenCreated,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    SelfUpdate,
    TokenPair,
    User,
    UserCreate,
    UserUpdate,
)
from otherix.models.common import Page
from otherix.rbac import Permission

router = APIRouter(prefix="/v1", tags=["auth"])

READ_USERS = require(Permission.USER_READ)
MANAGE_USERS = require(Permission.USER_MANAGE)
TOKENS = require(Permission.API_TOKEN_MANAGE)
ANY_USER = require(Permission.CLUSTER_READ)  # every role: "who am I"


@router.post("/auth/login", operation_id="login", dependencies=[Depends(public)])
async def login(
    body: LoginRequest,
    request: Request,
    deps: Deps = Depends(get_deps),
    auth_service: AuthService = Depends(get_auth_service),
) -> TokenPair:
    # Async: the failed-login windows are checked on the event loop, the
    # password in the bounded hash queue (api/loginguard.py).
    client = forwarded.client_key(request.scope, deps.settings.server.trusted_proxies)
    return await auth_service.login(body.username, body.password, client)


@router.post("/auth/refresh", operation_id="refresh", dependencies=[Depends(public)])
def refresh(
    body: RefreshRequest, auth_service: AuthService = Depends(get_auth_service)
) -> TokenPair:
    return auth_service.refresh(body.refresh_token)


@router.post("/auth/logout", operation_id="logout", status_code=204)
def logout(
    body: LogoutRequest,
    me: Principal = Depends(ANY_USER),
    auth_service: AuthService = Depends(get_auth_service),
) -> Response:
    auth_service.logout(me, body.refresh_token, body.all_sessions)
    return Response(status_code=204)


@router.get("/users/me", operation_id="getCurrentUser")
def get_me(
    me: Principal = Depends(ANY_USER), user_service: UserService = Depends(get_user_service)
) -> User:
    return user_service.get_user(me.user_id)


@router.patch("/users/me", operation_id="updateCurrentUser")
def update_me(
    body: SelfUpdate,
    me: Principal = Depends(ANY_USER),
    user_service: UserService = Depends(get_user_service),
) -> User:
    return user_service.update_self(me, body)


@router.get("/users", operation_id="listUsers", dependencies=[Depends(READ_USERS)])
def list_users(user_service: UserService = Depends(get_user_service)) -> Page[User]:
    return Page[User].model_validate({"data": user_service.list_users(), "meta": {}})


@router.post(
    "/users", operation_id="createUser", status_code=201, dependencies=[Depends(MANAGE_USERS)]
)
def create_user(body: UserCreate, user_service: UserService = Depends(get_user_service)) -> User:
    return user_service.create_user(body)


@router.get("/users/{user_id}", operation_id="getUser", dependencies=[Depends(READ_USERS)])
def get_user(user_id: str, user_service: UserService = Depends(get_user_service)) -> User:
    return user_service.get_user(user_id)


@router.patch("/users/{user_id}", operation_id="updateUser")
def update_user(
    user_id: str,
    body: UserUpdate,
    me: Principal = Depends(MANAGE_USERS),
    user_service: UserService = Depends(get_user_service),
) -> User:
    """A new password, a new role or ``disabled: true`` ends the user's sessions."""
    return user_service.update_user(me, user_id, body)


@router.delete("/users/{user_id}", operation_id="deleteUser", status_code=204)
def delete_user(
    user_id: str,
    me: Principal = Depends(MANAGE_USERS),
    user_service: UserService = Depends(get_user_service),
) -> Response:
    user_service.delete_user(me, user_id)
    return Response(status_code=204)


@router.get("/users/{user_ref}/api-tokens", operation_id="listApiTokens")
def list_tokens(
    user_ref: str,
    include_revoked: bool = False,
    me: Principal = Depends(TOKENS),
    user_service: UserService = Depends(get_user_service),
) -> Page[ApiToken]:
    data = user_service.list_tokens(me, user_ref, include_revoked)
    return Page[ApiToken].model_validate({"data": data, "meta": {}})


@router.post("/users/{user_ref}/api-tokens", operation_id="createApiToken", status_code=201)
def create_token(
    user_ref: str,
    body: ApiTokenCreate,
    me: Principal = Depends(TOKENS),
    user_service: UserService = Depends(get_user_service),
) -> ApiTokenCreated:
    return user_service.create_token(me, user_ref, body)


@router.delete(
    "/users/{user_ref}/api-tokens/{token_id}", operation_id="revokeApiToken", status_code=204
)
def revoke_token(
    user_ref: str,
    token_id: str,
    me: Principal = Depends(TOKENS),
    user_service: UserService = Depends(get_user_service),
) -> Response:
    user_service.revoke_token(me, user_ref, token_id)
    return Response(status_code=204)
