"""The composition root (``api/compose.py``): one graph, built once, hooks wired."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from otherix.api.bootstrap import open_deps
from otherix.api.compose import build_services
from otherix.api.services.cache import SCRUB as POOL_SCRUB
from otherix.api.services.placement import CREATE
from otherix.api.services.scan import TYPE as SCAN
from otherix.api.services.vmimport import VM_IMPORT
from otherix.api.services.vmmove import VM_MOVE
from otherix.api.services.vms import DELETE, POWER_TASKS
from support.server import make_settings


def test_every_service_shares_the_one_store_clock_and_hub(tmp_path: Path) -> None:
    deps = open_deps(make_settings(tmp_path / "api"))
    try:
        services = build_services(deps)
        built = [getattr(services, f.name) for f in dataclasses.fields(services)]
        assert len({id(s) for s in built}) == len(built)  # one of each
        for service in built:
            for name, shared in (("db", deps.db), ("clock", deps.clock), ("hub", deps.hub)):
                if hasattr(service, name):
                    assert getattr(service, name) is shared, (type(service).__name__, name)
        # collaborators are the instances the root built, not copies
        assert services.pool_service.node_service is services.node_service
        assert services.vm_service.placement_service is services.placement_service
        assert services.placement_service.task_service is services.task_service
        assert services.node_service.node_store is deps.db.nodes
    finally:
        deps.db.close()


def test_the_task_hooks_of_each_type_are_registered_for_its_owner(tmp_path: Path) -> None:
    deps = open_deps(make_settings(tmp_path / "api"))
    try:
        services = build_services(deps)
        hooks = services.task_service.hooks
        placement, vms, scan, moves = (
            services.placement_service,
            services.vm_service,
            services.scan_service,
            services.move_service,
        )
        assert hooks.running == {CREATE: placement.on_create_running}
        power = dict.fromkeys(POWER_TASKS, vms.on_power_success)
        assert hooks.success == {
            CREATE: placement.on_create_success,
            DELETE: vms.on_delete_success,
            SCAN: scan.apply_scan_result,
            VM_MOVE: moves.on_move_success,
            **power,
            VM_IMPORT: services.vm_import_service.on_import_success,  # drift (issue 16)
        }
        assert hooks.failure == {
            CREATE: placement.on_create_failure,
            DELETE: vms.on_delete_failure,
            VM_MOVE: moves.on_move_failure,
            **dict.fromkeys(POWER_TASKS, vms.on_power_failure),
            VM_IMPORT: services.vm_import_service.on_import_failure,
        }
        assert set(POWER_TASKS) == {"vm.start", "vm.stop", "vm.restart", "vm.poweroff"}
        assert hooks.cancellable_in == {
            CREATE: ("pending",),
            VM_MOVE: ("pending", "running"),
            POOL_SCRUB: ("pending", "running"),
        }
        # a second graph has its own hooks: nothing is shared through module state
        assert build_services(deps).task_service.hooks is not hooks
    finally:
        deps.db.close()
