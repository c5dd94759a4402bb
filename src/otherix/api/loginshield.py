"""Refuse a blocked client's logins before they are read or routed.

Installed by ``api.app.create_app`` (pure ASGI, innermost, so request ids and
metrics still see the answer). A ``POST /v1/auth/login`` from a client
address whose failed-login window is full (``LoginGuard.client_blocked``) is
answered ``429 rate_limited`` with ``Retry-After`` right here: the answer is
the one ``AuthService.login`` would give, but without the body parse,
validation and dependency resolution, so a flood from one client costs the
server a small fraction of what its other requests cost. Everything else
(per-user windows, the hash queue) is decided in ``AuthService.login``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from otherix.api import forwarded
from otherix.api.deps import Deps
from otherix.api.errors import error_response
from otherix.api.loginguard import WINDOW_MESSAGES
from otherix.errors import RateLimited

LOGIN_PATH = "/v1/auth/login"


class LoginShield:
    def __init__(self, app: ASGIApp, *, deps: Deps) -> None:
        self.app = app
        self.deps = deps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == LOGIN_PATH
            and self.deps.logins.client_blocked(
                forwarded.client_key(scope, self.deps.settings.server.trusted_proxies)
            )
        ):
            more = True
            while more:  # read the (small, size-limited) body so keep-alive stays in step
                message = await receive()
                more = message["type"] == "http.request" and message.get("more_body", False)
            refusal = RateLimited(WINDOW_MESSAGES["client"], {"retry_after_seconds": 60})
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)
