"""The composition root of the web process: every service, built once with its
collaborators.

``create_app(deps)`` calls :func:`build_services` with the ``Deps`` that
``bootstrap.open_deps`` (or a test) made: the settings, the database and its
aggregate stores (``Database.pools``, ``.nodes``, ...), the clock, the watch hub
and the process's shared memories. Each service gets exactly the collaborators
it uses, as constructor arguments: the store protocols of ``otherix.store.ports``
(never a SQLAlchemy connection), the other services it calls, and the parts of
``Deps`` it reads. Nothing else hands a service anything: routes receive theirs
through the FastAPI dependencies of ``api/provide.py``, workers through their
constructor. The task hooks are wired here too: a task type's owner
(placement, VMs, scans) registers what runs when the agent reports on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher

from otherix.api.deps import Deps
from otherix.api.services.auth import AuthService
from otherix.api.services.cache import SCRUB as POOL_SCRUB
from otherix.api.services.cache import CacheService
from otherix.api.services.capacity import CapacityService
from otherix.api.services.capacitytrend import CapacityTrends
from otherix.api.services.defaultpool import DefaultPoolService
from otherix.api.services.drift import DriftService
from otherix.api.services.heartbeat import HeartbeatService
from otherix.api.services.nodes import NodeService
from otherix.api.services.placement import CREATE as VM_CREATE
from otherix.api.services.placement import PlacementService
from otherix.api.services.poolreinit import PoolReinitService
from otherix.api.services.pools import PoolService
from otherix.api.services.rejoin import RejoinService
from otherix.api.services.scan import TYPE as POOL_SCAN
from otherix.api.services.scan import ScanService
from otherix.api.services.secrets import Passwords
from otherix.api.services.tasks import TaskService
from otherix.api.services.users import UserService
from otherix.api.services.vmimport import VM_IMPORT, VmImportService
from otherix.api.services.vmmove import VM_MOVE, VmMoveService
from otherix.api.services.vms import DELETE as VM_DELETE
from otherix.api.services.vms import POWER_TASKS, VmService
from otherix.api.services.watching import WatchService


@dataclass(frozen=True)
class Services:
    """What :func:`build_services` made; ``provide.py`` hands each one out."""

    auth_service: AuthService
    user_service: UserService
    default_pool_service: DefaultPoolService
    node_service: NodeService
    heartbeat_service: HeartbeatService
    watch_service: WatchService
    rejoin_service: RejoinService
    pool_service: PoolService
    reinit_service: PoolReinitService
    task_service: TaskService
    scan_service: ScanService
    placement_service: PlacementService
    vm_service: VmService
    cache_service: CacheService
    # drift (issue 16): pool doctor, its purge, vm import
    drift_service: DriftService
    vm_import_service: VmImportService
    move_service: VmMoveService
    capacity_service: CapacityService


def passwords_for(deps: Deps) -> Passwords:
    auth = deps.settings.auth
    return Passwords(
        PasswordHasher(
            time_cost=auth.password_hash_time_cost,
            memory_cost=auth.password_hash_memory_kib,
            parallelism=auth.password_hash_parallelism,
        )
    )


def build_services(deps: Deps) -> Services:
    """Every service of the web process, each with the collaborators it uses."""
    db, clock, hub, settings = deps.db, deps.clock, deps.hub, deps.settings
    passwords = passwords_for(deps)
    auth = AuthService(
        settings=settings,
        db=db,
        clock=clock,
        jwt_secret=deps.jwt_secret,
        logins=deps.logins,
        user_store=db.users,
        passwords=passwords,
    )
    users = UserService(db=db, clock=clock, user_store=db.users, passwords=passwords)
    default_pool = DefaultPoolService(
        settings=settings,
        db=db,
        clock=clock,
        hub=hub,
        event_store=db.events,
        node_store=db.nodes,
        pool_store=db.pools,
        settings_store=db.settings,
    )
    nodes = NodeService(
        settings=settings,
        db=db,
        clock=clock,
        hub=hub,
        event_store=db.events,
        node_store=db.nodes,
        pool_store=db.pools,
        settings_store=db.settings,
        default_pool_service=default_pool,
    )
    heartbeat = HeartbeatService(
        settings=settings,
        db=db,
        clock=clock,
        cluster_id=deps.cluster_id,
        hub=hub,
        heartbeats=deps.heartbeats,
        desired_cache=deps.desired_cache,
        desired_json_cache=deps.desired_json_cache,
        node_store=db.nodes,
        pool_store=db.pools,
        task_store=db.tasks,
        vm_store=db.vms,
        event_store=db.events,
        default_pool_service=default_pool,
        node_service=nodes,
        transfer_key=deps.jwt_secret,
    )
    capacity_trends = CapacityTrends(settings=settings, clock=clock, capacity_store=db.capacity)
    pools = PoolService(
        settings=settings,
        db=db,
        clock=clock,
        hub=hub,
        node_store=db.nodes,
        pool_store=db.pools,
        default_pool_service=default_pool,
        node_service=nodes,
        capacity_trends=capacity_trends,
    )
    tasks = TaskService(db=db, clock=clock, hub=hub, node_store=db.nodes, task_store=db.tasks)
    placement = PlacementService(
        db=db,
        clock=clock,
        hub=hub,
        placement_lock=deps.placement_lock,
        node_store=db.nodes,
        pool_store=db.pools,
        vm_store=db.vms,
        task_service=tasks,
    )
    scan = ScanService(
        db=db,
        clock=clock,
        hub=hub,
        node_store=db.nodes,
        pool_store=db.pools,
        heartbeat_service=heartbeat,
        pool_service=pools,
        task_service=tasks,
    )
    vms = VmService(
        db=db,
        clock=clock,
        hub=hub,
        node_store=db.nodes,
        task_store=db.tasks,
        vm_store=db.vms,
        default_pool_service=default_pool,
        node_service=nodes,
        placement_service=placement,
        task_service=tasks,
    )
    cache = CacheService(
        db=db,
        clock=clock,
        hub=hub,
        node_store=db.nodes,
        vm_store=db.vms,
        pool_service=pools,
        task_service=tasks,
    )
    # what runs when the agent reports on a task, registered for each type's owner
    tasks.hooks.register(
        VM_CREATE,
        running=placement.on_create_running,
        success=placement.on_create_success,
        failure=placement.on_create_failure,
        cancellable_in=("pending",),  # the agent has not started it
    )
    tasks.hooks.register(VM_DELETE, success=vms.on_delete_success, failure=vms.on_delete_failure)
    for power_task in POWER_TASKS:
        tasks.hooks.register(power_task, success=vms.on_power_success, failure=vms.on_power_failure)
    tasks.hooks.register(POOL_SCAN, success=scan.apply_scan_result)
    moves = VmMoveService(
        db=db,
        clock=clock,
        hub=hub,
        node_store=db.nodes,
        pool_store=db.pools,
        task_store=db.tasks,
        vm_store=db.vms,
        vm_service=vms,
        task_service=tasks,
        transfer_key=deps.jwt_secret,
    )
    tasks.hooks.register(
        VM_MOVE,
        success=moves.on_move_success,
        failure=moves.on_move_failure,
        cancellable_in=("pending", "running"),  # the copy is thrown away; the source stays
    )
    # a scrub only reads (and moves damaged entries aside): the agent stops it at once
    tasks.hooks.register(POOL_SCRUB, cancellable_in=("pending", "running"))
    # drift (issue 16)
    drift = DriftService(
        db=db,
        clock=clock,
        hub=hub,
        node_store=db.nodes,
        pool_store=db.pools,
        pool_service=pools,
        task_service=tasks,
    )
    vm_import = VmImportService(
        db=db,
        clock=clock,
        hub=hub,
        node_store=db.nodes,
        pool_store=db.pools,
        vm_store=db.vms,
        pool_service=pools,
        task_service=tasks,
        vm_service=vms,
        placement_service=placement,
    )
    tasks.hooks.register(
        VM_IMPORT, success=vm_import.on_import_success, failure=vm_import.on_import_failure
    )
    return Services(
        auth_service=auth,
        user_service=users,
        default_pool_service=default_pool,
        node_service=nodes,
        heartbeat_service=heartbeat,
        watch_service=WatchService(
            settings=settings, db=db, hub=hub, heartbeat_service=heartbeat, node_service=nodes
        ),
        rejoin_service=RejoinService(
            settings=settings,
            db=db,
            clock=clock,
            hub=hub,
            node_store=db.nodes,
            node_service=nodes,
        ),
        pool_service=pools,
        reinit_service=PoolReinitService(
            db=db,
            hub=hub,
            node_store=db.nodes,
            pool_store=db.pools,
            default_pool_service=default_pool,
            pool_service=pools,
        ),
        task_service=tasks,
        scan_service=scan,
        placement_service=placement,
        vm_service=vms,
        cache_service=cache,
        drift_service=drift,
        vm_import_service=vm_import,
        move_service=moves,
        capacity_service=CapacityService(
            settings=settings,
            db=db,
            capacity_store=db.capacity,
            trends=capacity_trends,
            pool_service=pools,
        ),
    )
