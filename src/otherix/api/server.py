"""The uvicorn server of the control plane, used by ``serve`` (``main.py``) and
``quickstart`` (``quickstart.py``): ``make_server(deps, services)`` builds the app
with ``create_app(deps, services=services)``; ``exit_if_lost`` ends a process
whose SQLite file was lost.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import uvicorn

from otherix.api.app import create_app
from otherix.api.compose import Services
from otherix.api.deps import Deps


class _Server(uvicorn.Server):
    """Answers open long-polls immediately when asked to stop, and exits 0
    after a SIGTERM/SIGINT drain (uvicorn would re-raise the signal, which
    makes the exit status 143/130 and tells service managers it crashed)."""

    def __init__(self, config: uvicorn.Config, deps: Deps) -> None:
        super().__init__(config)
        self._deps = deps

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._deps.hub.close()
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


def make_server(deps: Deps, services: Services) -> uvicorn.Server:
    settings = deps.settings
    app = create_app(deps, services=services)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level="info",
        timeout_graceful_shutdown=int(settings.server.shutdown_grace),
        access_log=False,
        lifespan="on",
        # uvicorn would believe X-Forwarded-For from 127.0.0.1 by default (and
        # rewrite the client address before we see it): the app decides itself,
        # from server.trusted_proxies (api/forwarded.py).
        proxy_headers=False,
        ssl_certfile=str(settings.server.tls_cert_file) if settings.server.tls_cert_file else None,
        ssl_keyfile=str(settings.server.tls_key_file) if settings.server.tls_key_file else None,
    )
    return _Server(config, deps)


def run_server(deps: Deps, services: Services) -> None:
    make_server(deps, services).run()


def exit_if_lost(deps: Deps) -> None:
    """After serving: a lost SQLite file is never closed (closing would checkpoint
    into it and unlink its WAL by name, which may belong to a restored database
    now), so the process ends here, without the interpreter's clean-up."""
    if deps.db.lost is None:
        return
    logging.getLogger("otherix.api").error(
        "exiting without closing the lost database (%s); restore it and start again",
        deps.db.lost,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
