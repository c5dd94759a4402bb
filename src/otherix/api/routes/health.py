"""``/healthz`` (process up, version), ``/readyz`` (store reachable), ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from otherix import __version__
from otherix.api.deps import Deps, get_deps, public

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", dependencies=[Depends(public)])
def healthz() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", operation_id="readyz", dependencies=[Depends(public)])
def readyz(deps: Deps = Depends(get_deps)) -> JSONResponse:
    if deps.db.ping():
        return JSONResponse({"status": "ready", "store": deps.db.backend})
    return JSONResponse(
        {"error": {"code": "internal", "message": "store unreachable"}}, status_code=503
    )


@router.get(
    "/metrics", operation_id="metrics", dependencies=[Depends(public)], include_in_schema=False
)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
