"""The one HTTP client, shared by the CLI and the agent (never by the API).

``errors`` turns transport failures and the server's error envelope into
typed exceptions at one choke point (one class per error family, from the
server's tree in ``otherix.errors``); ``base.HttpClient`` does the requests;
``api.ApiClient`` has the user-facing calls, which return wire models
(``otherix.models``, or ``answers`` where a replayed answer may lack a
secret), ``agent.AgentClient`` the node's (join, heartbeat, watch).
"""

from otherix.client.errors import (
    ApiError,
    ClientError,
    ConflictError,
    DefaultPoolNotSetError,
    DeleteBlockedError,
    InternalServerError,
    MethodNotAllowedError,
    NotFoundError,
    PathNotAllowedError,
    PermissionDeniedError,
    PoolNameAmbiguousError,
    TransportError,
    UnauthenticatedError,
    UnavailableError,
    ValidationFailedError,
)

__all__ = [
    "ApiError",
    "ClientError",
    "ConflictError",
    "DefaultPoolNotSetError",
    "DeleteBlockedError",
    "InternalServerError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PathNotAllowedError",
    "PermissionDeniedError",
    "PoolNameAmbiguousError",
    "TransportError",
    "UnauthenticatedError",
    "UnavailableError",
    "ValidationFailedError",
]
