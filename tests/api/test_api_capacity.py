"""Time to full (issue 16.6) through the API, with a played agent (heartbeats with
pool reports) and ``capacity.sample_interval`` of 1 s: samples accumulate one per
bucket, retention deletes old ones, ``pool get`` shows the trend and the
``pool_filling`` condition while a pool fills fast and drops it when it stops, the
history route answers every role that may read pools, and two replicas on
PostgreSQL store one sample per bucket.

The fast tests seat the suite's fake clock and run the sampler's pass by hand
(the workers are off); the slow one lets the real worker sample in real time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apihelpers import create_pool, get_pool, heartbeat, pool_report, ready_node, serve

from support import pg
from support.clock import FakeClock
from support.factories import Api, http

GiB = 1 << 30
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FAST: dict[str, Any] = {
    "capacity.sample_interval": "1s",
    "capacity.retention": "6s",
    "capacity.trend_window": "4s",
    "capacity.warn_days": 7,
}
USAGE = {
    "vm_disk_bytes": 5 * GiB,
    "vm_provisioned_bytes": 20 * GiB,
    "image_cache_bytes": GiB,
    "scratch_bytes": 0,
}


def report(available: int, capacity: int = 100 * GiB) -> dict[str, Any]:
    return pool_report("fast", capacity=capacity, available=available, usage=USAGE)


def history(api: Api, ref: str, role: str = "viewer", **params: Any) -> dict[str, Any]:
    with http(api, role) as c:
        r = c.get(f"/v1/storage-pools/{ref}/capacity-history", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def conditions(api: Api, ref: str) -> list[str]:
    return [c["type"] for c in get_pool(api, ref, "viewer").json()["conditions"]]


@pytest.fixture
def fast_api(tmp_path):
    with serve(tmp_path / "api", run_workers=False, **FAST) as api:
        clock = FakeClock(T0)
        api.server.set_clock(clock)
        yield api, clock


def step(api: Api, clock: FakeClock, node, available: int, seconds: float = 1.0) -> dict[str, int]:
    assert heartbeat(api, node, [report(available)]).status_code == 200
    counts: dict[str, int] = api.server.services.capacity_service.sample_pass()
    clock.advance(seconds)
    return counts


def test_samples_trend_filling_and_its_end(fast_api):
    api, clock = fast_api
    node = ready_node(api, "node-a")
    pool = create_pool(api, node, "fast")
    assert get_pool(api, pool["id"]).json()["capacity_trend"] == {
        "state": "unknown",
        "samples": 0,
        "bytes_per_day": None,
        "available_bytes": None,
        "days_to_full": None,
        "full_at": None,
    }
    # 2 GiB a second out of 100 GiB: full in well under warn_days
    assert step(api, clock, node, 90 * GiB) == {"sampled": 1, "deleted": 0}
    assert step(api, clock, node, 88 * GiB) == {"sampled": 1, "deleted": 0}
    trend = get_pool(api, pool["id"]).json()["capacity_trend"]
    assert (trend["state"], trend["samples"]) == ("unknown", 2)  # 3 over 2 intervals needed
    assert "pool_filling" not in conditions(api, pool["id"])

    step(api, clock, node, 86 * GiB)
    body = get_pool(api, pool["id"]).json()
    trend = body["capacity_trend"]
    assert trend["state"] == "filling"
    assert trend["samples"] == 3
    assert trend["bytes_per_day"] == pytest.approx(2 * GiB * 86400)
    assert trend["available_bytes"] == 86 * GiB
    assert trend["days_to_full"] == pytest.approx(43 / 86400, abs=1e-3)
    filling = [c for c in body["conditions"] if c["type"] == "pool_filling"]
    assert len(filling) == 1
    assert "capacity.warn_days" in filling[0]["message"]
    # the name view shows it per instance, the list shows it too
    concept = get_pool(api, "fast").json()
    assert concept["instances"][0]["capacity_trend"]["state"] == "filling"
    with http(api, "viewer") as c:
        listed = c.get("/v1/storage-pools").json()["data"]
    mine = next(x for x in listed if x["id"] == pool["id"])
    assert [x["type"] for x in mine["conditions"]] == ["pool_filling"]

    # it stops: flat for longer than the trend window, the condition goes
    for _ in range(5):
        step(api, clock, node, 86 * GiB)
    body = get_pool(api, pool["id"]).json()
    assert body["capacity_trend"]["state"] == "not_filling"
    assert body["capacity_trend"]["bytes_per_day"] == 0
    assert "pool_filling" not in [c["type"] for c in body["conditions"]]


def test_one_sample_per_bucket_and_retention(fast_api):
    api, clock = fast_api
    node = ready_node(api, "node-a")
    pool = create_pool(api, node, "fast")
    assert step(api, clock, node, 90 * GiB, seconds=0.4) == {"sampled": 1, "deleted": 0}
    # the same bucket again (0.4 s later): nothing new
    assert step(api, clock, node, 89 * GiB, seconds=0.6) == {"sampled": 0, "deleted": 0}
    for _ in range(6):
        step(api, clock, node, 89 * GiB)
    samples = history(api, pool["id"])["samples"]
    assert len(samples) == 7
    assert samples[0]["used_bytes"] == 10 * GiB  # the bucket kept its first sample
    # 6 s retention: the next passes delete the oldest
    counts = step(api, clock, node, 89 * GiB)
    assert counts["sampled"] == 1
    assert counts["deleted"] >= 1
    body = history(api, pool["id"])
    times = [datetime.fromisoformat(s["sampled_at"]) for s in body["samples"]]
    assert times == sorted(times)
    assert times[-1] - times[0] <= timedelta(seconds=6)
    assert body["sample_interval_seconds"] == 1
    assert body["retention_seconds"] == 6


def test_history_route_parts_since_limit_and_roles(fast_api):
    api, clock = fast_api
    node = ready_node(api, "node-a")
    pool = create_pool(api, node, "fast")
    for available in (90, 89, 88, 87):
        step(api, clock, node, available * GiB)
    body = history(api, "fast")  # a name with one instance works as the UUID does
    assert (body["pool"], body["pool_id"], body["node"]) == ("fast", pool["id"], "node-a")
    assert body["trend"]["state"] == "filling"
    first = body["samples"][0]
    assert first == {
        "sampled_at": first["sampled_at"],
        "used_bytes": 10 * GiB,
        "capacity_bytes": 100 * GiB,
        "available_bytes": 90 * GiB,
        "vm_disk_bytes": 5 * GiB,
        "image_cache_bytes": GiB,
    }
    page = history(api, pool["id"], limit=2)
    assert [s["used_bytes"] for s in page["samples"]] == [10 * GiB, 11 * GiB]
    rest = history(api, pool["id"], since=page["next_since"])
    assert [s["used_bytes"] for s in rest["samples"]] == [12 * GiB, 13 * GiB]
    assert rest["next_since"] is None
    for role in ("admin", "operator", "developer", "viewer"):
        history(api, pool["id"], role)
    with http(api, "viewer") as c:
        missing = c.get("/v1/storage-pools/nope/capacity-history")
        bad_limit = c.get(f"/v1/storage-pools/{pool['id']}/capacity-history?limit=0")
        naive = c.get(
            f"/v1/storage-pools/{pool['id']}/capacity-history",
            params={"since": "2026-06-01T12:00:00"},
        )
        garbage = c.get(f"/v1/storage-pools/{pool['id']}/capacity-history?since=soon")
        too_many = c.get(f"/v1/storage-pools/{pool['id']}/capacity-history?limit=5001")
        year_one = c.get(
            f"/v1/storage-pools/{pool['id']}/capacity-history",
            params={"since": "0001-01-01T00:00:00+01:00"},
        )
        unauth = httpx_get_anonymous(api, pool["id"])
    assert missing.status_code == 404
    assert bad_limit.status_code == 400
    assert bad_limit.json()["error"]["code"] == "validation_failed"
    assert naive.status_code == 400
    for r in (garbage, too_many, year_one):
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "validation_failed"
    assert unauth == 401


def httpx_get_anonymous(api: Api, pool_id: str) -> int:
    with http(api, None) as c:
        return c.get(f"/v1/storage-pools/{pool_id}/capacity-history").status_code


def test_a_deleted_pool_loses_its_samples_and_a_big_delete_restarts_the_trend(fast_api):
    api, clock = fast_api
    node = ready_node(api, "node-a")
    pool = create_pool(api, node, "fast")
    for available in (60, 59, 58, 90, 89):  # 32 GiB deleted after the third
        step(api, clock, node, available * GiB)
    trend = history(api, pool["id"])["trend"]
    assert (trend["state"], trend["samples"]) == ("unknown", 2)
    step(api, clock, node, 88 * GiB)
    trend = history(api, pool["id"])["trend"]
    assert (trend["state"], trend["samples"]) == ("filling", 3)
    with http(api) as c:
        assert c.delete(f"/v1/storage-pools/{pool['id']}").status_code == 204
    with api.server.deps.db.read() as conn:
        assert api.server.deps.db.capacity.samples(conn, [pool["id"]]) == []


def test_a_failed_pool_or_an_unreported_one_is_not_sampled(fast_api):
    api, _clock = fast_api
    node = ready_node(api, "node-a")
    create_pool(api, node, "fast")
    create_pool(api, node, "quiet")  # never reported
    heartbeat(api, node, [pool_report("fast", "failed", "gone", capacity=None, available=None)])
    assert api.server.services.capacity_service.sample_pass() == {"sampled": 0, "deleted": 0}


@pytest.mark.slow
def test_the_worker_samples_in_real_time(tmp_path):
    """The real worker, 1 s buckets: samples accumulate, pool_filling appears while the
    pool fills fast and goes once it stops (no fake clock)."""
    with serve(tmp_path / "api", **FAST) as api:
        node = ready_node(api, "node-a")
        pool = create_pool(api, node, "fast")
        available = 90 * GiB
        deadline = time.monotonic() + 60
        while "pool_filling" not in conditions(api, pool["id"]):
            assert time.monotonic() < deadline, history(api, pool["id"])
            available -= GiB // 4
            heartbeat(api, node, [report(available)])
            time.sleep(0.25)
        assert len(history(api, pool["id"])["samples"]) >= 3
        # it stops: once the window holds only flat samples the trend is flat
        while (body := get_pool(api, pool["id"]).json())["capacity_trend"]["state"] != (
            "not_filling"
        ):
            assert time.monotonic() < deadline, history(api, pool["id"])
            heartbeat(api, node, [report(available)])
            time.sleep(0.25)
        assert "pool_filling" not in [c["type"] for c in body["conditions"]]
        samples = history(api, pool["id"])["samples"]
        times = [s["sampled_at"] for s in samples]
        assert len(times) == len(set(times))  # one per bucket


@pytest.mark.postgres
def test_two_replicas_store_one_sample_per_bucket(tmp_path, pg_database):
    hour = {**FAST, "capacity.sample_interval": "1h", "capacity.trend_window": "2h",
            "capacity.retention": "1d"}  # fmt: skip
    pg.truncate_all(pg_database)
    with (
        serve(tmp_path / "a", pg_database, run_workers=False, **hour) as a,
        serve(tmp_path / "b", pg_database, run_workers=False, roles=False, **hour) as b,
    ):
        node = ready_node(a, "node-a")
        pool = create_pool(a, node, "fast")
        heartbeat(a, node, [report(90 * GiB)])
        db = a.server.deps.db
        while True:  # both passes in one hour bucket (a boundary between them: again)
            with db.read() as conn:
                before = db.capacity.db_now(conn)
            one = a.server.services.capacity_service.sample_pass()
            two = b.server.services.capacity_service.sample_pass()
            with db.read() as conn:
                after = db.capacity.db_now(conn)
            assert before is not None
            assert after is not None
            if before.hour == after.hour:
                break
            with db.write() as conn:
                db.capacity.delete_before(conn, after + timedelta(days=1), 100)
        assert one["sampled"] + two["sampled"] == 1
        assert len(history(a, pool["id"])["samples"]) == 1
