"""The client's error classes (otherix.client.errors): one per family, from the server's tree."""

from __future__ import annotations

import httpx
import pytest

from otherix import errors
from otherix.client import errors as client_errors
from otherix.client.errors import (
    BY_WIRE,
    ApiError,
    ConflictError,
    ConnectionRefused,
    DefaultPoolMissing,
    DefaultPoolMissingInput,
    DefaultPoolNotSetError,
    DeleteBlockedError,
    InternalServerError,
    NotFoundError,
    PathNotAllowedError,
    PermissionDeniedError,
    PoolNameAmbiguousError,
    UnauthenticatedError,
    UnavailableError,
    ValidationFailedError,
    api_error,
    from_response,
)
from otherix.retry import Permanent, Retryable, is_retryable


def test_every_class_of_the_server_tree_has_a_client_class() -> None:
    named = [c for c in errors.all_error_classes() if "code" in vars(c)]
    for cls in named:
        if cls is errors.OtherixError:
            continue
        assert (cls.http_status, str(cls.code)) in BY_WIRE, cls.__name__


@pytest.mark.parametrize(
    ("server", "client"),
    [
        (errors.ValidationFailed, ValidationFailedError),
        (errors.PoolNotFoundForName, ValidationFailedError),
        (errors.PathNotAllowed, PathNotAllowedError),
        (errors.PoolNameAmbiguous, PoolNameAmbiguousError),
        (errors.DefaultPoolNotSet400, DefaultPoolMissingInput),
        (errors.InvalidCredentials, UnauthenticatedError),
        (errors.TokenRevoked, UnauthenticatedError),
        (errors.PermissionDenied, PermissionDeniedError),
        (errors.NotFound, NotFoundError),
        (errors.DefaultPoolNotSet, DefaultPoolMissing),
        (errors.Conflict, DeleteBlockedError),
        (errors.ResourceInUse, DeleteBlockedError),
        (errors.VmNameInUse, ConflictError),
        (errors.IdempotencyKeyMismatch, ConflictError),
        (errors.RateLimited, UnavailableError),
        (errors.DatabaseUnavailable, UnavailableError),
        (errors.RequestTimeout, UnavailableError),
        (errors.Internal, InternalServerError),
    ],
)
def test_the_server_error_rendered_comes_back_as_its_family(
    server: type[errors.OtherixError], client: type[ApiError]
) -> None:
    exc = server()
    resp = httpx.Response(exc.http_status, json=exc.envelope())
    got = from_response(resp)
    assert type(got) is client
    assert got.code == exc.code
    assert got.status == exc.http_status
    assert got.is_retryable is exc.is_retryable  # both sides agree on what may be retried


def test_internal_is_permanent_on_both_sides() -> None:
    assert not errors.Internal().is_retryable
    assert isinstance(errors.Internal(), Permanent)
    got = api_error(500, "internal", "internal error")
    assert isinstance(got, InternalServerError)
    assert isinstance(got, Permanent)
    assert not is_retryable(got)
    assert not api_error(500, None, "<html>proxy</html>").is_retryable


def test_the_temporary_errors_and_transport_failures_are_retryable() -> None:
    for code, status in [("rate_limited", 429), ("store_unavailable", 503)]:
        assert isinstance(api_error(status, code, "later"), Retryable)
    for status in (408, 502, 503, 504):  # a proxy's answer, no envelope
        assert api_error(status, None, "gateway").is_retryable
    assert is_retryable(ConnectionRefused("down"))


def test_the_delete_blocking_codes_are_one_class() -> None:
    for code in errors.DELETE_BLOCKING_CODES:
        assert isinstance(api_error(409, code, "in use"), DeleteBlockedError)
    assert not isinstance(api_error(409, "vm_name_in_use", "taken"), DeleteBlockedError)


def test_default_pool_not_set_is_one_marker_at_either_status() -> None:
    assert isinstance(api_error(404, "default_pool_not_set", "x"), DefaultPoolNotSetError)
    assert isinstance(api_error(400, "default_pool_not_set", "x"), DefaultPoolNotSetError)
    assert isinstance(api_error(404, "default_pool_not_set", "x"), NotFoundError)
    assert isinstance(api_error(400, "default_pool_not_set", "x"), ValidationFailedError)


def test_an_unknown_code_falls_back_on_its_status() -> None:
    got = api_error(404, "some_new_code", "gone")
    assert type(got) is NotFoundError
    assert got.code == "some_new_code"
    assert type(api_error(418, None, "teapot")) is ApiError
    assert type(api_error(507, None, "full")) is UnavailableError
    assert str(api_error(404, "not_found", "gone")) == "api_error: not_found: gone"


def test_every_client_api_error_class_is_marked_retryable_or_permanent() -> None:
    classes = [
        c
        for c in vars(client_errors).values()
        if isinstance(c, type)
        and issubclass(c, ApiError)
        and c not in (ApiError,)
        and c is not DefaultPoolNotSetError
    ]
    assert classes
    for cls in classes:
        assert issubclass(cls, Retryable) != issubclass(cls, Permanent), cls.__name__


@pytest.mark.parametrize(
    ("details", "default_in_use"),
    [
        ({"reason": "default_pool_in_use", "name": "default"}, True),
        ({"blocking_resources": {"vm_disks": 2}}, False),
        (None, False),
    ],
)
def test_a_delete_blocked_by_the_default_pool_says_so(details, default_in_use) -> None:
    exc = api_error(409, "conflict", "blocked", details)
    assert isinstance(exc, DeleteBlockedError)
    assert exc.default_pool_in_use is default_in_use
