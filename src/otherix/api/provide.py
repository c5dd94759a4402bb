"""The FastAPI dependencies through which routes receive what ``create_app`` built.

``create_app(deps)`` is the composition root of the web process: it builds the
services (``api/compose.py``), keeps them, the ``Deps`` it was given and the
``Metrics`` it made on the application, and this module is the one place that
reads them back: for the routes, one dependency per service
(``get_pool_service``, ...) and ``get_deps``/``get_metrics``, through
``Depends``; for the guards and middleware that are not routes, ``deps_of`` and
``services_of``. No route reaches into ``app.state`` itself, and no route gets
the whole set of services.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from otherix.api.compose import Services
from otherix.api.deps import Deps
from otherix.api.middleware import Metrics
from otherix.api.services.auth import AuthService
from otherix.api.services.cache import CacheService
from otherix.api.services.capacity import CapacityService
from otherix.api.services.defaultpool import DefaultPoolService
from otherix.api.services.drift import DriftService
from otherix.api.services.heartbeat import HeartbeatService
from otherix.api.services.nodes import NodeService
from otherix.api.services.poolreinit import PoolReinitService
from otherix.api.services.pools import PoolService
from otherix.api.services.rejoin import RejoinService
from otherix.api.services.scan import ScanService
from otherix.api.services.tasks import TaskService
from otherix.api.services.users import UserService
from otherix.api.services.vmimport import VmImportService
from otherix.api.services.vmmove import VmMoveService
from otherix.api.services.vms import VmService
from otherix.api.services.watching import WatchService


def provide(app: FastAPI, deps: Deps, services: Services, metrics: Metrics) -> None:
    """Called once by ``create_app``: what the dependencies below hand out."""
    app.state.deps = deps
    app.state.services = services
    app.state.metrics = metrics


def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# async: no thread hop per request
async def get_deps(request: Request) -> Deps:
    return deps_of(request)


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_auth_service(request: Request) -> AuthService:
    return services_of(request).auth_service


async def get_user_service(request: Request) -> UserService:
    return services_of(request).user_service


async def get_default_pool_service(request: Request) -> DefaultPoolService:
    return services_of(request).default_pool_service


async def get_node_service(request: Request) -> NodeService:
    return services_of(request).node_service


async def get_heartbeat_service(request: Request) -> HeartbeatService:
    return services_of(request).heartbeat_service


async def get_watch_service(request: Request) -> WatchService:
    return services_of(request).watch_service


async def get_rejoin_service(request: Request) -> RejoinService:
    return services_of(request).rejoin_service


async def get_pool_service(request: Request) -> PoolService:
    return services_of(request).pool_service


async def get_reinit_service(request: Request) -> PoolReinitService:
    return services_of(request).reinit_service


async def get_task_service(request: Request) -> TaskService:
    return services_of(request).task_service


async def get_scan_service(request: Request) -> ScanService:
    return services_of(request).scan_service


async def get_cache_service(request: Request) -> CacheService:
    return services_of(request).cache_service


async def get_capacity_service(request: Request) -> CapacityService:
    return services_of(request).capacity_service


async def get_vm_service(request: Request) -> VmService:
    return services_of(request).vm_service


# drift (issue 16)
async def get_drift_service(request: Request) -> DriftService:
    return services_of(request).drift_service


async def get_vm_import_service(request: Request) -> VmImportService:
    return services_of(request).vm_import_service


async def get_move_service(request: Request) -> VmMoveService:
    return services_of(request).move_service
