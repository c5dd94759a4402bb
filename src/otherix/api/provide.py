"""The FastAPI dependencies through which routes receive what ``create_app`` built.

``create_app(deps)`` is the composition root of the web process: it keeps the
``Deps`` it was given and the ``Metrics`` it made on the application, and this
module is the one place that reads them back, for the routes (``get_deps``,
``get_metrics``, through ``Depends``) and for the guards and middleware that
are not routes (``deps_of``). No route reaches into ``app.state`` itself.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from otherix.api.deps import Deps
from otherix.api.middleware import Metrics


def provide(app: FastAPI, deps: Deps, metrics: Metrics) -> None:
    """Called once by ``create_app``: what the dependencies below hand out."""
    app.state.deps = deps
    app.state.metrics = metrics


def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


async def get_deps(request: Request) -> Deps:  # async: no thread hop per request
    return deps_of(request)


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics
