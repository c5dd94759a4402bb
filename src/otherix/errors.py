"""The one error tree of Otherix, shared by the API, the client, the agent and the CLI.

Every error a user can see has a stable snake_case ``code`` and a default HTTP
status. The API renders them as ``{"error": {"code", "message", "details"}}``
(one handler in ``otherix.api.errors``); the client turns that envelope back
into :class:`ApiError`. ``docs/error-codes.md`` is the catalogue, and a test
checks that every code here is listed there.

    OtherixError                      code, http_status, message, details
    ├── ValidationFailed              400 validation_failed
    │   ├── PathNotAllowed            400 path_not_allowed
    │   ├── PoolNameAmbiguous         400 pool_name_ambiguous
    │   ├── PoolNotFoundForName       400 pool_not_found
    │   └── DefaultPoolNotSet400      400 default_pool_not_set
    ├── Unauthenticated               401 unauthenticated
    │   ├── InvalidCredentials        401 invalid_credentials
    │   ├── TokenRevoked              401 token_revoked
    │   └── AccountDisabled           401 account_disabled
    ├── PermissionDenied              403 permission_denied
    ├── NotFound                      404 not_found
    │   └── DefaultPoolNotSet         404 default_pool_not_set
    ├── MethodNotAllowed              405 method_not_allowed
    ├── Conflict                      409 conflict
    │   ├── IdempotencyKeyMismatch    409 idempotency_key_mismatch
    │   ├── ResourceInUse             409 resource_in_use
    │   ├── UserHasResources          409 user_has_resources
    │   ├── VmNameInUse               409 vm_name_in_use
    │   ├── DiskNotOrphan             409 disk_not_orphan
    │   ├── PoolNotReady              409 pool_not_ready
    │   └── AgentVersionUnsupported   409 agent_version_unsupported
    ├── RateLimited                   429 rate_limited
    ├── RequestTimeout                504 request_timeout
    ├── DatabaseUnavailable           503 store_unavailable
    └── Internal                      500 internal

Retryable vs permanent is a type (``otherix.retry``): :class:`TemporaryError`
(``rate_limited``, ``request_timeout``, ``store_unavailable``) is
:class:`~otherix.retry.Retryable`, everything else is
:class:`~otherix.retry.Permanent`, ``internal`` included: a bug on the server
does not go away by asking again. The client raises its own class per family,
from this tree (``otherix.client.errors``).

:data:`DELETE_BLOCKING_CODES` are the codes a delete answers while something
still uses the resource (VM disks on a pool, the cluster default pool, a
node's pools); the client raises them as one class, the CLI matches on it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, ClassVar

from otherix.retry import Permanent, Retryable


class ErrorCode(StrEnum):
    """Every error code the control plane emits; mirrored by docs/error-codes.md."""

    UNAUTHENTICATED = "unauthenticated"
    INVALID_CREDENTIALS = "invalid_credentials"
    TOKEN_REVOKED = "token_revoked"
    ACCOUNT_DISABLED = "account_disabled"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    RESOURCE_IN_USE = "resource_in_use"
    IDEMPOTENCY_KEY_MISMATCH = "idempotency_key_mismatch"
    VALIDATION_FAILED = "validation_failed"
    RATE_LIMITED = "rate_limited"
    REQUEST_TIMEOUT = "request_timeout"
    INTERNAL = "internal"
    STORE_UNAVAILABLE = "store_unavailable"
    USER_HAS_RESOURCES = "user_has_resources"
    # pools
    POOL_NOT_FOUND = "pool_not_found"
    POOL_NAME_AMBIGUOUS = "pool_name_ambiguous"
    PATH_NOT_ALLOWED = "path_not_allowed"
    DEFAULT_POOL_NOT_SET = "default_pool_not_set"
    POOL_CORDONED = "pool_cordoned"
    # VMs (placement reasons and task failures are not HTTP errors: they live in
    # a VM's status.reason and a task's error.code, see docs/error-codes.md)
    VM_NAME_IN_USE = "vm_name_in_use"
    VM_NOT_STARTABLE = "vm_not_startable"
    VM_RUNNING = "vm_running"
    # drift (issue 16): pool doctor, vm import
    DISK_NOT_ORPHAN = "disk_not_orphan"
    POOL_NOT_READY = "pool_not_ready"
    VM_NOT_MOVABLE = "vm_not_movable"
    # upgrades (issue 17): version skew between the control plane and an agent
    AGENT_VERSION_UNSUPPORTED = "agent_version_unsupported"


class OtherixError(Exception):
    """Base of every error with a stable code."""

    code: ClassVar[str] = ErrorCode.INTERNAL
    http_status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, details: dict[str, Any] | None = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    @property
    def is_retryable(self) -> bool:
        return isinstance(self, Retryable)

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class TemporaryError(OtherixError, Retryable):
    """Base of the errors where the same request may succeed later."""


class PermanentError(OtherixError, Permanent):
    """Base of the errors where the same request gets the same answer."""


class ValidationFailed(PermanentError):
    code = ErrorCode.VALIDATION_FAILED
    http_status = 400
    default_message = "validation failed"


class PathNotAllowed(ValidationFailed):
    code = ErrorCode.PATH_NOT_ALLOWED
    default_message = "path is not on the storage_pools allowlist"


class PoolNameAmbiguous(ValidationFailed):
    code = ErrorCode.POOL_NAME_AMBIGUOUS
    default_message = "pool name maps to more than one instance; address it by UUID"


class PoolNotFoundForName(ValidationFailed):
    code = ErrorCode.POOL_NOT_FOUND
    default_message = "no pool instance with this name exists in the cluster"


class DefaultPoolNotSet400(ValidationFailed):
    code = ErrorCode.DEFAULT_POOL_NOT_SET
    default_message = "cluster default pool is not set; pass a pool or set a default"


class Unauthenticated(PermanentError):
    code = ErrorCode.UNAUTHENTICATED
    http_status = 401
    default_message = "authentication required"


class InvalidCredentials(Unauthenticated):
    code = ErrorCode.INVALID_CREDENTIALS
    default_message = "invalid username or password"


class TokenRevoked(Unauthenticated):
    code = ErrorCode.TOKEN_REVOKED
    default_message = "token has been revoked"


class AccountDisabled(Unauthenticated):
    code = ErrorCode.ACCOUNT_DISABLED
    default_message = "this account is disabled; ask an administrator"


class PermissionDenied(PermanentError):
    code = ErrorCode.PERMISSION_DENIED
    http_status = 403
    default_message = "permission denied"


class NotFound(PermanentError):
    code = ErrorCode.NOT_FOUND
    http_status = 404
    default_message = "the requested resource was not found"


class DefaultPoolNotSet(NotFound):
    code = ErrorCode.DEFAULT_POOL_NOT_SET
    default_message = "cluster default pool is not set"


class MethodNotAllowed(PermanentError):
    code = ErrorCode.METHOD_NOT_ALLOWED
    http_status = 405
    default_message = "method not allowed for this resource"


class Conflict(PermanentError):
    code = ErrorCode.CONFLICT
    http_status = 409
    default_message = "conflict"


class AgentVersionUnsupported(Conflict):
    """A heartbeat from an agent outside the supported version skew
    (``otherix.domain.versions``): nothing of the report is stored."""

    code = ErrorCode.AGENT_VERSION_UNSUPPORTED
    default_message = "agent version not supported by this control plane"


class IdempotencyKeyMismatch(Conflict):
    code = ErrorCode.IDEMPOTENCY_KEY_MISMATCH
    default_message = "Idempotency-Key was already used with a different request"


class ResourceInUse(Conflict):
    code = ErrorCode.RESOURCE_IN_USE
    default_message = "resource is in use"


class UserHasResources(Conflict):
    code = ErrorCode.USER_HAS_RESOURCES
    default_message = "user still owns resources; delete them first"


class VmNameInUse(Conflict):
    code = ErrorCode.VM_NAME_IN_USE
    default_message = "a VM with this name already exists"


class PoolCordoned(Conflict):
    """A VM asked explicitly for a pool whose instances are all cordoned."""

    code = ErrorCode.POOL_CORDONED


class VmNotStartable(Conflict):
    """A start (or restart) refused before anything runs: ``details.reason`` says why."""

    code = ErrorCode.VM_NOT_STARTABLE


class VmRunning(Conflict):
    """A delete of a VM whose QEMU runs, without ``force``."""

    code = ErrorCode.VM_RUNNING


# --- drift (issue 16) ---------------------------------------------------------------


class DiskNotOrphan(Conflict):
    """``vm import`` (or ``pool doctor --purge``) named a path that is not an orphan (or
    stray) of the pool in its agent's last drift report."""

    code = ErrorCode.DISK_NOT_ORPHAN


class PoolNotReady(Conflict):
    """The pool instance is not ``ready`` (or its node cannot act now)."""

    code = ErrorCode.POOL_NOT_READY


# --- end drift -----------------------------------------------------------------------
class VmNotMovable(Conflict):
    """A ``vm move`` refused before anything is copied: ``details.reason`` says why."""

    code = ErrorCode.VM_NOT_MOVABLE


class RateLimited(TemporaryError):
    code = ErrorCode.RATE_LIMITED
    http_status = 429
    default_message = "too many requests; retry later"


class RequestTimeout(TemporaryError):
    code = ErrorCode.REQUEST_TIMEOUT
    http_status = 504
    default_message = "request timed out"


class DatabaseUnavailable(TemporaryError):
    """The store cannot be used right now (unreachable, locked, or its file lost);
    the answer carries ``Retry-After``."""

    code = ErrorCode.STORE_UNAVAILABLE
    http_status = 503
    default_message = "the database is unavailable; retry later"


class Internal(PermanentError):
    code = ErrorCode.INTERNAL
    http_status = 500
    default_message = "internal error"


#: The codes a delete is refused with while something still uses the resource.
DELETE_BLOCKING_CODES: frozenset[str] = frozenset({ErrorCode.CONFLICT, ErrorCode.RESOURCE_IN_USE})


def all_error_classes() -> list[type[OtherixError]]:
    """Every concrete class of the tree (for the catalogue test)."""
    seen: list[type[OtherixError]] = []
    stack: list[type[OtherixError]] = [OtherixError]
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen


def quoted(value: str, limit: int = 200) -> str:
    """``value`` in double quotes for a message, escaped like JSON and cut to ``limit``.

    Escaped so a name with quotes or control characters cannot break the
    sentence; ASCII-escaped when it is not valid Unicode (a lone surrogate).
    """
    cut = value if len(value) <= limit else value[:limit] + "…"
    text = json.dumps(cut, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(cut)
    return text


def not_found_message(what: str, name: str, listing: str) -> str:
    """The sentence of every not-found: what, which, and the command that lists them.

    ``not_found_message("pool", "x", "otherix pool list")`` is
    ``pool "x" not found; run 'otherix pool list' to see the pools``.
    """
    return f"{what} {quoted(name)} not found; run '{listing}' to see the {what}s"
