"""The agent loop (otherix.agent.daemon) with a stub control plane and a fake clock.

No sleeps: ``FakeClock.sleep`` advances fake time, ``StubControlPlane.watch``
advances it by the watch's timeout (or to the next scheduled desired-state
change), and the run ends when fake time passes ``until``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from otherix.agent.daemon import Daemon, LoopConfig
from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState, digest_of
from otherix.agent.runtime import StopToken
from otherix.agent.state import NodeState
from otherix.agent.tasks import TaskRunner
from otherix.client.errors import ConnectionRefused, api_error
from otherix.models.heartbeat import (
    AgentTask,
    DeclaredPool,
    DesiredState,
    HeartbeatReply,
    HeartbeatReport,
    TaskUpdate,
    WatchReply,
)
from support.clock import FakeClock

NODE = NodeState(
    server="http://cp", node_name="n1", node_id="id-1", credential="otxn_x", architecture="amd64"
)


class StubControlPlane:
    """Answers heartbeats with ``desired``; ``errors`` are raised first, one per call."""

    def __init__(self, clock: FakeClock, interval: float = 30.0) -> None:
        self.clock = clock
        self.interval = interval
        self.desired = DesiredState(revision=1, declared_pools=[])
        self.reports: list[tuple[float, HeartbeatReport]] = []
        self.watches: list[tuple[float, int, float]] = []
        self.task_updates: list[tuple[str, TaskUpdate]] = []
        self.errors: list[Exception] = []
        self.resync_next = False
        self.changes: list[tuple[float, Callable[[], None]]] = []

    def declare(self, *pools: DeclaredPool, tasks: list[AgentTask] | None = None) -> None:
        self.desired = DesiredState(
            revision=self.desired.revision + 1, declared_pools=list(pools), tasks=tasks or []
        )

    def at(self, when: float, change: Callable[[], None]) -> None:
        self.changes.append((when, change))
        self.changes.sort(key=lambda c: c[0])

    def _due_changes(self) -> None:
        while self.changes and self.changes[0][0] <= self.clock.monotonic():
            self.changes.pop(0)[1]()

    def heartbeat(self, node: str, report: HeartbeatReport) -> HeartbeatReply:
        assert node == "n1"
        self._due_changes()
        if self.errors:
            raise self.errors.pop(0)
        self.reports.append((self.clock.monotonic(), report))
        resync, self.resync_next = self.resync_next and report.pools is None, False
        return HeartbeatReply(
            received_at=datetime.now(UTC),
            resync=resync,
            heartbeat_interval_seconds=self.interval,
            desired=self.desired,
        )

    def watch(self, node: str, revision: int, timeout: float) -> WatchReply:
        self.watches.append((self.clock.monotonic(), revision, timeout))
        if self.errors:
            raise self.errors.pop(0)
        deadline = self.clock.monotonic() + timeout
        if self.changes and self.changes[0][0] <= deadline:
            self.clock.advance(self.changes[0][0] - self.clock.monotonic())
            self._due_changes()
        else:
            self.clock.advance(timeout)
        changed = self.desired.revision > revision
        return WatchReply(changed=changed, desired=self.desired)

    def update_task(self, node: str, task_id: str, update: TaskUpdate) -> None:
        self.task_updates.append((task_id, update))

    # views ----------------------------------------------------------------------
    def full(self) -> list[tuple[float, list[str]]]:
        return [(t, [p.name for p in r.pools]) for t, r in self.reports if r.pools is not None]


class Rig:
    def __init__(self, tmp_path: Path, until: float, **config: float | None) -> None:
        self.prefix = f"{tmp_path}/pools/"
        self.stop = StopToken()
        self.clock = FakeClock(monotonic_start=0.0, until=until, stop=self.stop)
        self.cp = StubControlPlane(self.clock)
        self.saved: list[NodeState] = []
        pools = PoolState(
            PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[self.prefix]
        )
        self.daemon = Daemon(
            client=self.cp,
            pools=pools,
            tasks=TaskRunner(pools),
            state=NODE,
            clock=self.clock,
            stop=self.stop,
            config=LoopConfig(**config),  # type: ignore[arg-type]
            agent_version="0.1.0",
            rng=random.Random(7),
            persist=self.saved.append,
        )

    def pool(self, name: str) -> DeclaredPool:
        return DeclaredPool(name=name, type="local_dir", path=f"{self.prefix}{name}")

    def run(self) -> None:
        self.daemon.run()


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path, until=100)


def test_first_heartbeat_full_then_digest_only(rig: Rig) -> None:
    rig.cp.declare(rig.pool("a"))
    rig.run()
    times = [t for t, _ in rig.cp.reports]
    assert times == [0, 0, 30, 60, 90]
    first, second, *rest = (r for _, r in rig.cp.reports)
    assert first.pools == []  # registry empty at boot, but a full report
    assert [(p.name, p.reconciliation_status) for p in second.pools or []] == [("a", "ready")]
    assert second.revision == 2
    assert all(r.pools is None and r.capabilities is None for r in rest)
    assert {r.digest for r in rest} == {second.digest} == {digest_of(second.pools or [])}
    assert Path(rig.pool("a").path, "vms").is_dir()
    assert rig.saved[-1].revision == 2  # the applied revision is persisted


def test_watch_is_held_until_the_next_heartbeat(rig: Rig) -> None:
    rig.run()
    assert rig.cp.watches[0] == (0, 1, 25.0)  # min(watch_timeout, 30 s to the heartbeat)
    assert rig.cp.watches[1] == (25.0, 1, 5.0)


def test_resync_sends_the_full_report_at_once(rig: Rig) -> None:
    rig.cp.declare(rig.pool("a"))
    rig.cp.at(30, lambda: setattr(rig.cp, "resync_next", True))
    rig.run()
    assert [t for t, _ in rig.cp.reports] == [0, 0, 30, 30, 60, 90]
    assert rig.cp.reports[2][1].pools is None
    assert [p.name for p in rig.cp.reports[3][1].pools or []] == ["a"]
    assert rig.cp.reports[4][1].pools is None


def test_watch_change_reconciles_and_reports_at_once(rig: Rig) -> None:
    rig.cp.declare(rig.pool("a"))
    rig.cp.at(10.5, lambda: rig.cp.declare(rig.pool("a"), rig.pool("b")))
    rig.run()
    assert rig.cp.full() == [(0, []), (0, ["a"]), (10.5, ["a", "b"])]
    assert rig.cp.reports[2][1].revision == 3
    assert Path(rig.pool("b").path, "images").is_dir()


def test_undeclared_pool_is_reported_away_and_kept_on_disk(rig: Rig) -> None:
    rig.cp.declare(rig.pool("a"), rig.pool("b"))
    rig.cp.at(40, lambda: rig.cp.declare(rig.pool("a")))
    rig.run()
    assert rig.cp.full()[-1] == (40, ["a"])
    assert Path(rig.pool("b").path).is_dir()
    assert rig.daemon._pools.reconciler.lookup("b") is None


def test_same_reports_under_a_new_revision_are_sent_in_full(rig: Rig) -> None:
    # Deleted and re-created between two looks: same report, new row on the CP.
    rig.cp.declare(rig.pool("a"))
    rig.cp.at(40, lambda: rig.cp.declare(rig.pool("a")))
    rig.run()
    assert rig.cp.full() == [(0, []), (0, ["a"]), (40, ["a"])]


def test_failed_pool_recovers_on_the_periodic_reconcile(rig: Rig, tmp_path: Path) -> None:
    blocker = Path(rig.pool("a").path)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the pool should be")
    rig.cp.declare(rig.pool("a"))
    rig.clock.until = 50
    rig.cp.at(20, blocker.unlink)  # fixed by an operator between two passes
    rig.run()
    statuses = [
        (t, [(p.reconciliation_status, p.reconciliation_error is None) for p in r.pools])
        for t, r in rig.cp.reports
        if r.pools
    ]
    assert statuses == [(0, [("failed", False)]), (30, [("ready", True)])]


@pytest.mark.security
def test_disallowed_path_fails_and_creates_nothing(rig: Rig, tmp_path: Path) -> None:
    outside = DeclaredPool(name="x", type="local_dir", path=f"{tmp_path}/elsewhere/x")
    rig.cp.declare(outside)
    rig.clock.until = 1
    rig.run()
    (report,) = rig.cp.reports[-1][1].pools or []
    assert report.reconciliation_status == "failed"
    assert "outside this node's allowed path prefixes" in (report.reconciliation_error or "")
    assert not Path(outside.path).exists()
    assert not Path(outside.path).parent.exists()


def _fail_forever(rig: Rig, exc: Exception) -> None:
    rig.cp.errors = [exc] * 10_000


def test_backoff_grows_with_full_jitter_and_is_capped(rig: Rig, caplog) -> None:
    _fail_forever(rig, ConnectionRefused("http://cp: connection refused"))
    rig.clock.until = 600
    with caplog.at_level(logging.WARNING, "otherix.agent.daemon"):
        rig.run()
    sleeps = rig.clock.sleeps
    ceilings = [min(30.0, 0.5 * 2**i) for i in range(len(sleeps))]
    assert all(0 <= s <= c for s, c in zip(sleeps, ceilings, strict=True))
    assert max(sleeps) <= 30.0
    assert sum(s > 16.0 for s in sleeps) >= 3  # reached the cap region, repeatedly
    assert len(set(sleeps)) == len(sleeps)  # jittered, not a fixed ladder
    assert sum(s < c * 0.99 for s, c in zip(sleeps, ceilings, strict=False)) >= len(sleeps) // 2
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1  # once per state change, not per retry


def test_backoff_ceiling_sequence_and_reset(rig: Rig) -> None:
    b = rig.daemon.backoff
    ceilings = []
    for _ in range(9):
        ceilings.append(b.ceiling())
        b.next()
    assert ceilings == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    b.reset()
    assert b.ceiling() == 0.5


def test_recovery_after_an_outage_resets_backoff_and_logs_once(rig: Rig, caplog) -> None:
    rig.cp.errors = [ConnectionRefused("down")] * 5
    rig.clock.until = 40
    with caplog.at_level(logging.INFO, "otherix.agent.daemon"):
        rig.run()
    assert len(rig.clock.sleeps) == 5
    assert rig.cp.reports[0][1].pools == []  # the first report that got through is full
    assert rig.daemon.backoff.failures == 0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("connected to the control plane" in m for m in messages) == 1


def test_5xx_is_retried_with_backoff(rig: Rig) -> None:
    rig.cp.errors = [api_error(503, "internal", "db down", None)] * 3
    rig.clock.until = 10
    rig.run()
    assert all(s <= 2.0 for s in rig.clock.sleeps[:3])
    assert rig.cp.reports


def test_401_is_logged_loudly_once_and_retried_slowly(rig: Rig, caplog) -> None:
    _fail_forever(rig, api_error(401, "unauthenticated", "unknown or revoked node credential", {}))
    rig.clock.until = 300
    with caplog.at_level(logging.WARNING, "otherix.agent.daemon"):
        rig.run()
    assert len(rig.clock.sleeps) >= 9
    assert all(27 <= s <= 33 for s in rig.clock.sleeps)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "credential" in errors[0].getMessage()
    assert "bootstrap --force" in errors[0].getMessage()


def test_gone_node_waits_for_readmit_then_carries_on(rig: Rig, caplog) -> None:
    gone = api_error(409, "conflict", "node is gone", {"reason": "node_gone"})
    rig.cp.errors = [gone] * 4
    rig.clock.until = 200
    with caplog.at_level(logging.INFO, "otherix.agent.daemon"):
        rig.run()
    assert all(27 <= s <= 33 for s in rig.clock.sleeps[:4])
    assert rig.cp.reports
    assert rig.cp.reports[0][0] >= 4 * 27
    messages = [r.getMessage() for r in caplog.records]
    assert sum("readmit" in m for m in messages) == 1
    assert sum("connected" in m for m in messages) == 1


def test_internal_error_is_permanent_retried_slowly_not_with_backoff(rig: Rig, caplog) -> None:
    """A 500 ``internal`` is a bug on the server: the loop does not hammer it with
    backoff (which would start at 0.5 s), it asks again once per heartbeat interval."""
    bug = api_error(500, "internal", "internal error", {"request_id": "r1"})
    rig.cp.errors = [bug] * 3
    rig.clock.until = 120
    with caplog.at_level(logging.ERROR, "otherix.agent.daemon"):
        rig.run()
    assert all(27 <= s <= 33 for s in rig.clock.sleeps[:3])
    assert rig.daemon.backoff.failures == 0
    assert [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]


def test_a_task_report_answered_internal_is_dropped(rig: Rig, caplog) -> None:
    attempts: list[float] = []

    def broken_update(node: str, task_id: str, update: TaskUpdate) -> None:
        attempts.append(rig.clock.monotonic())
        raise api_error(500, "internal", "internal error", None)

    rig.cp.update_task = broken_update  # type: ignore[method-assign]
    rig.cp.declare(
        rig.pool("a"), tasks=[AgentTask(id="t1", type="storage_pool.scan", args={"pool": "a"})]
    )
    with caplog.at_level(logging.WARNING, "otherix.agent.tasks"):
        rig.run()
    assert attempts == [0]  # permanent: reported once, not once per heartbeat interval
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_other_4xx_is_retried_slowly(rig: Rig, caplog) -> None:
    mismatch = api_error(409, "conflict", "architecture mismatch", {"reason": "x"})
    rig.cp.errors = [mismatch] * 3
    rig.clock.until = 120
    with caplog.at_level(logging.ERROR, "otherix.agent.daemon"):
        rig.run()
    assert all(27 <= s <= 33 for s in rig.clock.sleeps[:3])
    assert len(caplog.records) == 1


def test_interval_from_the_control_plane_unless_configured(tmp_path: Path) -> None:
    served = Rig(tmp_path / "a", until=10)
    served.cp.interval = 2
    served.run()
    assert [t for t, _ in served.cp.reports] == [0, 0, 2, 4, 6, 8]  # 2nd: new revision
    pinned = Rig(tmp_path / "b", until=10, heartbeat_interval=5)
    pinned.cp.interval = 2
    pinned.run()
    assert [t for t, _ in pinned.cp.reports] == [0, 0, 5]


def test_short_waits_sleep_instead_of_watching(tmp_path: Path) -> None:
    r = Rig(tmp_path, until=3)
    r.cp.interval = 0.4
    r.run()
    assert r.cp.watches == []
    assert [round(t, 1) for t, _ in r.cp.reports] == [0, 0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8]


def test_early_empty_watch_answer_backs_off(rig: Rig) -> None:
    def shutting_down(node: str, revision: int, timeout: float) -> WatchReply:
        rig.cp.watches.append((rig.clock.monotonic(), revision, timeout))
        return WatchReply(changed=False, desired=rig.cp.desired)  # at once, no change

    rig.cp.watch = shutting_down  # type: ignore[method-assign]
    rig.clock.until = 20
    rig.run()
    assert len(rig.cp.watches) < 200
    assert rig.clock.sleeps
    assert all(s <= 30 for s in rig.clock.sleeps)


def test_scan_task_is_run_and_reported_once(rig: Rig) -> None:
    rig.cp.declare(rig.pool("a"))
    scan = AgentTask(id="t1", type="storage_pool.scan", args={"pool": "a", "path": "/x"})
    bogus = AgentTask(id="t2", type="vm.teleport", args={})
    rig.cp.at(5, lambda: rig.cp.declare(rig.pool("a"), tasks=[scan, bogus]))
    rig.run()
    assert [t for t, _ in rig.cp.task_updates] == ["t1", "t2"]
    ok, unsupported = (u for _, u in rig.cp.task_updates)
    assert ok.status == "success"
    assert ok.result
    assert ok.result["capacity_bytes"] > 0
    assert unsupported.status == "failed"
    assert unsupported.error
    assert unsupported.error["code"] == "unsupported_task"
    # The next full report carries the scan's numbers (it must not overwrite them).
    after = [r for t, r in rig.cp.reports if t >= 5 and r.pools]
    first = after[0].pools
    assert first  # the filter above kept only reports with pools
    assert first[0].capacity_bytes == ok.result["capacity_bytes"]
    assert first[0].available_bytes == ok.result["available_bytes"]


def test_scan_of_an_unknown_pool_fails_not_found(rig: Rig) -> None:
    scan = AgentTask(id="t1", type="storage_pool.scan", args={"pool": "nope"})
    rig.cp.declare(tasks=[scan])
    rig.clock.until = 1
    rig.run()
    ((_, update),) = rig.cp.task_updates
    assert update.status == "failed"
    assert update.error == {
        "code": "not_found",
        "message": "pool does not match a configured pool",
        "details": {"pool": "nope"},
    }


def test_stop_ends_the_loop_between_steps(rig: Rig) -> None:
    rig.stop.set()
    rig.run()
    assert rig.cp.reports == []


def test_a_failing_task_report_does_not_hold_up_heartbeats(rig: Rig) -> None:
    attempts: list[float] = []

    def flaky_update(node: str, task_id: str, update: TaskUpdate) -> None:
        attempts.append(rig.clock.monotonic())
        if len(attempts) < 3:
            raise api_error(503, "store_unavailable", "task store down", None)
        rig.cp.task_updates.append((task_id, update))

    rig.cp.update_task = flaky_update  # type: ignore[method-assign]
    rig.cp.declare(
        rig.pool("a"), tasks=[AgentTask(id="t1", type="storage_pool.scan", args={"pool": "a"})]
    )
    rig.run()
    assert [t for t, _ in rig.cp.reports] == [0, 0, 30, 60, 90]  # heartbeats on time
    assert attempts == [0, 30, 60]  # retried once per heartbeat interval
    assert [t for t, _ in rig.cp.task_updates] == ["t1"]
