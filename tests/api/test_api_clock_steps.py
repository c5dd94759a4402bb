"""The control plane's wall clock steps; liveness does not care, expiries do.

A real server (HTTP heartbeats from enrolled nodes) with a ``FakeClock`` put
in through the clock seam (``deps.clock``). ``step`` sets the wall clock
without moving monotonic time, as NTP or ``date -s`` would; ``advance`` lets
time pass. On SQLite the liveness ages come from the process's monotonic
clock, so the fake clock is all the time there is. On PostgreSQL the ages
come from the database server's clock, which no fake can move: there the
test lets real time pass as well (``Timeline.passes``).

Liveness settings are seconds (stale after 2 s, gone 5 s later); the liveness
pass is called by the test (workers are off), exactly as the worker calls it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from apihelpers import Api, assert_error, heartbeat, http, join_node, ready_node, serve

from otherix.api.workers.liveness import liveness_pass
from support import pg
from support.clock import FakeClock

STALE, GONE = 2.0, 5.0
SETTINGS = {
    "workers.heartbeat.stale_threshold": STALE,
    "workers.heartbeat.gone_grace": GONE,
}


@dataclass
class Timeline:
    api: Api
    clock: FakeClock
    real_time: bool  # PostgreSQL: the database's clock only moves with real time

    def passes(self, seconds: float, *, beating: tuple = ()) -> None:
        """``seconds`` pass in steps of at most 1 s; the ``beating`` nodes
        heartbeat after each step, as live agents would."""
        left = seconds
        while left > 0:
            step = min(1.0, left)
            if self.real_time:
                time.sleep(step)
            self.clock.advance(step)
            for node in beating:
                assert heartbeat(self.api, node).status_code == 200
            left -= step

    def statuses(self, *nodes) -> dict[str, str]:
        liveness_pass(self.api.server.deps)
        with http(self.api) as c:
            return {n.name: c.get(f"/v1/nodes/{n.name}").json()["status"] for n in nodes}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def timeline(request, tmp_path) -> Iterator[Timeline]:
    db_url = None
    if request.param == "postgresql":
        db_url = request.getfixturevalue("pg_database")
        pg.truncate_all(db_url)
    with serve(tmp_path / "api", db_url, run_workers=False, **SETTINGS) as api:
        clock = FakeClock(datetime.now(UTC))
        api.server.set_clock(clock)
        yield Timeline(api, clock, real_time=request.param == "postgresql")


def test_a_step_back_does_not_freeze_liveness(timeline):
    alive, dying = ready_node(timeline.api, "back-alive"), ready_node(timeline.api, "back-dying")
    timeline.clock.step(-600)  # ten minutes back
    timeline.passes(STALE + 0.5, beating=(alive,))
    assert timeline.statuses(alive, dying) == {"back-alive": "ready", "back-dying": "unreachable"}
    timeline.passes(GONE + 0.5, beating=(alive,))
    assert timeline.statuses(alive, dying) == {"back-alive": "ready", "back-dying": "gone"}


def test_a_step_forward_marks_no_live_node_unreachable_and_nothing_gone(timeline):
    alive = ready_node(timeline.api, "fwd-alive")
    quiet = ready_node(timeline.api, "fwd-quiet")
    timeline.passes(STALE + 0.5, beating=(alive,))
    assert timeline.statuses(alive, quiet) == {"fwd-alive": "ready", "fwd-quiet": "unreachable"}
    timeline.clock.step(600)  # ten minutes forward, the step: far past the gone grace
    assert timeline.statuses(alive, quiet) == {"fwd-alive": "ready", "fwd-quiet": "unreachable"}
    timeline.passes(1, beating=(alive,))
    assert timeline.statuses(alive, quiet) == {"fwd-alive": "ready", "fwd-quiet": "unreachable"}
    # ...and a node that stops after the step still goes unreachable after the threshold
    timeline.passes(STALE + 0.5)
    assert timeline.statuses(alive) == {"fwd-alive": "unreachable"}


@pytest.mark.postgres
def test_a_node_promoted_on_a_stepped_back_replica_stays_ready_on_another(tmp_path, pg_database):
    """Two replicas on one PostgreSQL. Replica A's wall clock is ten minutes
    behind when a node comes back through it; replica B's liveness pass must
    not take the promotion's heartbeat time for ten minutes old."""
    pg.truncate_all(pg_database)
    shared = {**SETTINGS, "auth.jwt_secret": "s" * 48}  # replicas share the JWT secret
    with (
        serve(tmp_path / "a", pg_database, run_workers=False, **shared) as a,
        serve(tmp_path / "b", pg_database, run_workers=False, roles=False, **shared) as b,
    ):
        b.tokens.update(a.tokens)
        node = ready_node(a, "flap")
        time.sleep(STALE + 0.5)  # the node goes quiet; B has been up longer than the threshold
        assert Timeline(b, FakeClock(), real_time=True).statuses(node) == {"flap": "unreachable"}
        clock = FakeClock(datetime.now(UTC) - timedelta(minutes=10))
        a.server.set_clock(clock)
        assert heartbeat(a, node).status_code == 200  # promoted on A, before A's flush
        assert Timeline(b, FakeClock(), real_time=True).statuses(node) == {"flap": "ready"}


def test_expiries_follow_the_wall_clock(timeline):
    api, clock = timeline.api, timeline.clock
    with http(api) as c:
        expires = (clock.now() + timedelta(hours=1)).isoformat()
        r = c.post("/v1/users/me/api-tokens", json={"name": "stepped", "expires_at": expires})
        assert r.status_code == 201, r.text
        api_token = r.json()["token"]
        join_token = c.post("/v1/nodes/join-tokens", json={"ttl_seconds": 600}).json()["token"]
    with http(api) as c:
        assert c.get("/v1/users/me").status_code == 200
    clock.step(16 * 60)  # past the 15-minute JWT lifetime; no time has passed
    with http(api) as c:
        assert_error(
            c.get("/v1/users/me"),
            401,
            "unauthenticated",
            "access token has expired; refresh or log in again",
        )
    with http(api, token=api_token) as c:
        assert c.get("/v1/users/me").status_code == 200
    clock.step(3600)
    with http(api, token=api_token) as c:
        assert_error(c.get("/v1/users/me"), 401, "unauthenticated", "API token has expired")
    with http(api, None) as anon:
        r = anon.post("/v1/nodes/join", json={"join_token": join_token, "name": "late"})
    assert_error(r, 401, "unauthenticated", "join token has expired")


def test_a_restarted_control_plane_gives_every_node_a_full_threshold(tmp_path):
    """SQLite: ages count from the process start, not from a previous process's
    heartbeat times, so a fleet does not flap after a control-plane restart."""
    data = tmp_path / "api"
    with serve(data, run_workers=False, **SETTINGS) as api:
        node = join_node(api, "restart-node")
        assert heartbeat(api, node).status_code == 200
        tokens = api.tokens
    time.sleep(STALE + 0.5)  # the control plane is down longer than the threshold
    with serve(data, run_workers=False, roles=False, **SETTINGS) as api:
        api.tokens.update(tokens)
        clock = FakeClock(datetime.now(UTC))
        api.server.set_clock(clock)
        timeline = Timeline(api, clock, real_time=False)
        assert timeline.statuses(node) == {"restart-node": "ready"}
        timeline.passes(STALE - 0.5, beating=(node,))
        assert timeline.statuses(node) == {"restart-node": "ready"}
        timeline.passes(STALE + 0.5)
        assert timeline.statuses(node) == {"restart-node": "unreachable"}
