"""``create_app(deps)``: the FastAPI application, built the same way by
``server.py`` and by tests. No import-time globals: the ``Deps`` given, the
services built from it (``compose.py``) and the metrics made here reach the
routes through the dependencies of ``provide.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from otherix import __version__
from otherix.api import errors, openapi
from otherix.api.compose import Services, build_services
from otherix.api.deps import Deps
from otherix.api.idempotency import IdempotencyMiddleware
from otherix.api.inputguard import InputGuard
from otherix.api.loginshield import LoginShield
from otherix.api.middleware import Metrics, RequestMiddleware
from otherix.api.provide import provide
from otherix.api.routes import (
    auth,
    cache,
    capacity,
    cluster,
    drift,
    health,
    nodes,
    pools,
    tasks,
    vms,
)
from otherix.api.workers.runner import Workers
from otherix.api.workers.scheduler import KickScheduler, SchedulerWake


def create_app(
    deps: Deps, *, services: Services | None = None, run_workers: bool | None = None
) -> FastAPI:
    """The application over ``deps``, with ``services`` (built here from ``deps`` by
    ``compose.build_services`` when not given: a process builds them once)."""
    services = services if services is not None else build_services(deps)
    start_workers = deps.settings.workers.enabled if run_workers is None else run_workers
    scheduler_wake = SchedulerWake()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        workers = (
            Workers(
                deps,
                services.placement_service,
                scheduler_wake,
                capacity=services.capacity_service,
            )
            if start_workers
            else None
        )
        listener = None
        if deps.db.backend == "postgresql":
            from otherix.api.pglisten import PgListener

            listener = PgListener(deps.db.url, deps.hub)
            listener.start()
        if workers:
            workers.start()
        try:
            yield
        finally:
            deps.hub.close()
            if workers:
                workers.stop()
            if listener:
                listener.stop()

    app = FastAPI(
        title="Otherix control plane",
        version=__version__,
        description="Storage pools, nodes, the cluster default pool and VMs on pools. "
        'Errors use the envelope {"error": {code, message, details}}; '
        "see docs/error-codes.md. Input is strict on every operation: request bodies are "
        "JSON of at most 1 MiB, UTF-8, nested at most 64 levels, with every number within "
        "+-(2^63-1) (no NaN or Infinity) and no key repeated in an object; every string, "
        "query parameter, path segment and header is valid text without unpaired surrogates "
        "or U+0000. A refusal is 400 validation_failed naming the value in details.field "
        "(a dotted JSON path such as config.a.b, query.<name>, path.<parameter> or "
        "header.<name>) and details.in.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    metrics = Metrics()
    metrics.watch_waiters.set_function(deps.hub.waiting)
    metrics.pools_from(services.pool_service.gauge_samples)
    provide(app, deps, services, metrics)  # what the routes' dependencies hand out (provide.py)
    errors.install(app, max_body_bytes=deps.settings.server.max_body_bytes)
    for module in (health, auth, nodes, pools, cache, capacity, drift, cluster, tasks, vms):
        app.include_router(module.router)
    # Outermost last: RequestMiddleware (ids, body cap, metrics), then the login
    # shield (a blocked client's logins are refused before their body is read),
    # then the strict input rules, before anything else reads the request.
    app.add_middleware(KickScheduler, wake=scheduler_wake)
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(InputGuard)
    app.add_middleware(LoginShield, deps=deps)
    app.add_middleware(
        RequestMiddleware, max_body_bytes=deps.settings.server.max_body_bytes, metrics=metrics
    )
    openapi.install(app, iter_routes(app))
    return app


def iter_routes(app: FastAPI) -> list[APIRoute]:
    """Every APIRoute of the app, flattened (for the RBAC walk and docs)."""
    out: list[APIRoute] = []
    stack: list[Any] = list(app.routes)
    while stack:
        route = stack.pop(0)
        if isinstance(route, APIRoute):
            out.append(route)
        elif hasattr(route, "original_router"):
            stack.extend(route.original_router.routes)
    return out
