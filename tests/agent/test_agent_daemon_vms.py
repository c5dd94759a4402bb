"""The agent loop's VM reports (otherix.agent.daemon with ``vms=``): a stub ``VmReports``
whose ``version`` the test moves, a stub control plane and a fake clock.

The stub control plane's ``watch`` holds for its whole timeout (fake time) and then
applies the changes due by then, so a VM change is seen by the step after the watch.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from otherix.agent.daemon import Daemon, LoopConfig
from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.runtime import StopToken
from otherix.agent.state import NodeState
from otherix.agent.tasks import TaskRunner
from otherix.client.errors import ConnectionRefused
from otherix.models.heartbeat import (
    DesiredState,
    HeartbeatReply,
    HeartbeatReport,
    TaskUpdate,
    VmObservation,
    WatchReply,
)
from support.clock import FakeClock

NODE = NodeState(
    server="http://cp", node_name="n1", node_id="id-1", credential="otxn_x", architecture="amd64"
)
RUNNING = VmObservation(id="vm-a", state="running", pid=100, accelerator="tcg")
CRASHED = VmObservation(id="vm-a", state="crashed", exit_status=-9, accelerator="tcg")


class StubVms:
    """``VmReports``: the observations and version the test sets; counts the reads."""

    def __init__(self, observations: list[VmObservation], version: int = 1) -> None:
        self.version = version
        self._observations = observations
        self.reads = 0

    def set(self, observations: list[VmObservation]) -> None:
        self._observations = observations
        self.version += 1

    def observations(self) -> list[VmObservation]:
        self.reads += 1
        return list(self._observations)


class StubControlPlane:
    def __init__(self, clock: FakeClock, interval: float = 30.0) -> None:
        self.clock = clock
        self.interval = interval
        self.desired = DesiredState(revision=1, declared_pools=[])
        self.reports: list[tuple[float, HeartbeatReport]] = []
        self.watches: list[tuple[float, float]] = []
        self.changes: list[tuple[float, Callable[[], None]]] = []
        self.errors: list[Exception] = []

    def at(self, when: float, change: Callable[[], None]) -> None:
        self.changes.append((when, change))
        self.changes.sort(key=lambda c: c[0])

    def _due(self) -> None:
        while self.changes and self.changes[0][0] <= self.clock.monotonic():
            self.changes.pop(0)[1]()

    def heartbeat(self, node: str, report: HeartbeatReport) -> HeartbeatReply:
        self._due()
        if self.errors:
            raise self.errors.pop(0)
        self.reports.append((self.clock.monotonic(), report))
        return HeartbeatReply(
            received_at=datetime.now(UTC),
            resync=False,
            heartbeat_interval_seconds=self.interval,
            desired=self.desired,
        )

    def watch(self, node: str, revision: int, timeout: float) -> WatchReply:
        self.watches.append((self.clock.monotonic(), timeout))
        self.clock.advance(timeout)
        self._due()
        return WatchReply(changed=False, desired=self.desired)

    def update_task(self, node: str, task_id: str, update: TaskUpdate) -> None:
        raise AssertionError("no tasks here")

    def vms_sent(self) -> list[tuple[float, list[str] | None]]:
        """(time, the VM states carried, or None) of every heartbeat."""
        return [(t, None if r.vms is None else [v.state for v in r.vms]) for t, r in self.reports]


class Rig:
    def __init__(self, tmp_path: Path, vms: StubVms | None, until: float = 100.0) -> None:
        self.stop = StopToken()
        self.clock = FakeClock(monotonic_start=0.0, until=until, stop=self.stop)
        self.cp = StubControlPlane(self.clock)
        self.vms = vms
        pools = PoolState(
            PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/pools/"]
        )
        self.daemon = Daemon(
            client=self.cp,
            pools=pools,
            tasks=TaskRunner(pools),
            state=NODE,
            clock=self.clock,
            stop=self.stop,
            config=LoopConfig(),
            agent_version="0.1.0",
            rng=random.Random(7),
            vms=vms,
        )

    def run(self) -> None:
        self.daemon.run()


def test_a_changed_version_is_sent_with_the_next_heartbeat_and_only_then(
    tmp_path: Path,
) -> None:
    vms = StubVms([RUNNING])
    rig = Rig(tmp_path, vms)
    rig.cp.at(10.0, lambda: vms.set([CRASHED]))
    rig.run()
    # the two full reports of the start carry the VMs; the change goes at once (the
    # watch it ended was held at most vm_watch); a heartbeat with nothing new says None
    assert rig.cp.vms_sent() == [
        (0.0, ["running"]),
        (0.0, ["running"]),
        (10.0, ["crashed"]),
        (40.0, None),
        (70.0, None),
    ]
    assert rig.cp.reports[2][1].pools is None  # a VM change is not a full report
    assert rig.cp.reports[2][1].vms == [CRASHED]


def test_an_unchanged_version_is_not_sent_again(tmp_path: Path) -> None:
    vms = StubVms([RUNNING])
    rig = Rig(tmp_path, vms)
    rig.run()
    sent = rig.cp.vms_sent()
    assert sent[:2] == [(0.0, ["running"]), (0.0, ["running"])]
    assert [t for t, _ in sent[2:]] == [30.0, 60.0, 90.0]
    assert all(v is None for _, v in sent[2:])
    assert not rig.daemon.report_pending()


def test_a_version_change_makes_a_report_pending(tmp_path: Path) -> None:
    vms = StubVms([RUNNING])
    rig = Rig(tmp_path, vms, until=5.0)
    rig.run()
    assert not rig.daemon.report_pending()
    vms.set([RUNNING, CRASHED.model_copy(update={"id": "vm-b"})])
    assert rig.daemon.report_pending()


def test_a_version_change_is_sent_again_after_a_failed_heartbeat(tmp_path: Path) -> None:
    vms = StubVms([RUNNING])
    rig = Rig(tmp_path, vms)

    def crash() -> None:
        vms.set([CRASHED])
        rig.cp.errors = [ConnectionRefused("down")]

    rig.cp.at(10.0, crash)
    rig.run()
    sent = rig.cp.vms_sent()
    changed = [(t, v) for t, v in sent if v == ["crashed"]]
    assert len(changed) == 1
    assert 10.0 < changed[0][0] < 12.0  # after one backoff, not at the next interval
    later = sent[sent.index(changed[0]) + 1 :]
    assert later
    assert all(v is None for _, v in later)


def test_the_watch_is_held_at_most_vm_watch_while_vms_exist(tmp_path: Path) -> None:
    rig = Rig(tmp_path, StubVms([RUNNING]))
    rig.run()
    timeouts = [timeout for _, timeout in rig.cp.watches]
    assert timeouts
    assert max(timeouts) == LoopConfig().vm_watch == 2.0
    # a watch ends at most 2 s apart while nothing else happens
    starts = [t for t, _ in rig.cp.watches]
    assert all(b - a <= 2.0 + 1e-9 for a, b in itertools.pairwise(starts))


def test_the_watch_is_not_capped_without_vms(tmp_path: Path) -> None:
    rig = Rig(tmp_path, StubVms([], version=0))
    rig.run()
    assert rig.cp.watches[0] == (0.0, 25.0)  # min(watch_timeout, 30 s to the heartbeat)
    assert rig.cp.vms_sent()[:2] == [(0.0, []), (0.0, [])]
    assert all(v is None for _, v in rig.cp.vms_sent()[2:])


def test_the_cap_goes_once_the_last_vm_is_gone(tmp_path: Path) -> None:
    vms = StubVms([RUNNING])
    rig = Rig(tmp_path, vms)
    rig.cp.at(10.0, lambda: vms.set([]))
    rig.run()
    assert (10.0, []) in rig.cp.vms_sent()  # the empty list is a change too
    after = [timeout for t, timeout in rig.cp.watches if t >= 10.0]
    assert after[0] == 25.0


def test_without_a_vm_runtime_no_vms_are_sent(tmp_path: Path) -> None:
    rig = Rig(tmp_path, None)
    rig.run()
    assert all(r.vms is None for _, r in rig.cp.reports)
    assert rig.cp.watches[0] == (0.0, 25.0)
