"""``/healthz`` (process up, version), ``/readyz`` (store reachable, and on SQLite
its file still the one the server opened), ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from otherix import __version__
from otherix.api.deps import Deps
from otherix.api.errors import store_unavailable
from otherix.api.guards import public
from otherix.api.middleware import Metrics
from otherix.api.provide import get_deps, get_metrics
from otherix.store import StoreError, StoreLost, StoreUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", dependencies=[Depends(public)])
def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", operation_id="readyz", dependencies=[Depends(public)])
def readyz(request: Request, deps: Deps = Depends(get_deps)) -> JSONResponse:
    """200 when the store answers; else 503 ``store_unavailable`` with ``Retry-After``
    (``details.reason: "database_lost"`` once the SQLite file was deleted or replaced)."""
    try:
        deps.db.check()
        if deps.db.ping():
            return JSONResponse({"status": "ready", "store": deps.db.backend})
        lost = deps.db.lost
        exc: StoreUnavailable = StoreLost(lost) if lost else StoreUnavailable("store unreachable")
    except StoreUnavailable as found:
        exc = found
    except StoreError as other:
        exc = StoreUnavailable(str(other))
    return store_unavailable(exc, str(getattr(request.state, "request_id", "-")))


@router.get(
    "/metrics", operation_id="metrics", dependencies=[Depends(public)], include_in_schema=False
)
def metrics(collected: Metrics = Depends(get_metrics)) -> Response:
    return Response(generate_latest(collected.registry), media_type=CONTENT_TYPE_LATEST)
