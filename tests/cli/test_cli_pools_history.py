"""``otherix pool history`` and the ``capacity_trend:`` line of ``otherix pool get``
(issue 16.6), against a real server with 1 s capacity buckets and the suite's fake
clock; the samples are taken by the sampler's pass, the numbers come from heartbeats
as the node's agent would send them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from clihelpers import Cli, failed, heartbeat, join_node, ok, table, usage

from support import factories
from support.clock import FakeClock
from support.factories import Api, with_roles
from support.server import ApiServer, make_settings

GiB = 1 << 30
#: 30 GiB a day, in bytes a second: with 1 s samples the pool is full in ~3 days
PER_SECOND = 30 * GiB // 86400
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def history_api(tmp_path_factory) -> Iterator[Api]:
    settings = make_settings(
        tmp_path_factory.mktemp("history-api"),
        **{"capacity.sample_interval": "1s", "capacity.trend_window": "10s"},
    )
    server = ApiServer(settings, run_workers=False).start()
    try:
        yield with_roles(server)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def filled(history_api, tmp_path_factory) -> dict[str, str]:
    """Pool ``fast`` on node-a with three samples, 30 GiB a day growing; ``flat``
    on node-b with none."""
    api = history_api
    clock = FakeClock(T0)
    api.server.set_clock(clock)
    a, b = join_node(api, "node-a"), join_node(api, "node-b")
    heartbeat(api, a)
    heartbeat(api, b)
    ids = {}
    for node, name in ((a, "fast"), (b, "flat")):
        with api.client("admin") as c:
            r = c.post(
                "/v1/storage-pools",
                json={"node": node.name, "name": name, "path": f"/var/lib/otherix/pools/{name}"},
            )
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    for i in range(3):
        available = 90 * GiB - i * PER_SECOND
        heartbeat(api, a, [factories.pool_report("fast", capacity=100 * GiB, available=available)])
        api.server.services.capacity_service.sample_pass()
        clock.advance(1)
    return ids


@pytest.fixture
def hcli(history_api, tmp_path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(url=history_api.url, tokens=history_api.tokens, home=home)


def test_history_table_and_trend(hcli, filled):
    out = ok(hcli("pool", "history", "fast", role="viewer"))
    lines = out.splitlines()
    rows = table("\n".join(lines[:-1]) + "\n")
    assert [r["USED"] for r in rows] == ["10.0GiB", "10.0GiB", "10.0GiB"]
    assert {r["CAPACITY"] for r in rows} == {"100.0GiB"}
    assert rows[0]["TIME"].startswith("2026-06-01T12:00:00")
    assert lines[-1] == "trend: +30.00 GiB/day, full in ~3 days"


def test_history_json_since_and_limit(hcli, filled):
    body = json.loads(ok(hcli("pool", "history", filled["fast"], "-o", "json")))
    assert body["pool_id"] == filled["fast"]
    assert [s["used_bytes"] for s in body["samples"]] == [
        10 * GiB + i * PER_SECOND for i in range(3)
    ]
    assert body["trend"]["state"] == "filling"
    two = json.loads(ok(hcli("pool", "history", "fast", "--limit", "2", "-o", "json")))
    assert len(two["samples"]) == 2
    assert two["next_since"] is not None
    later = json.loads(
        ok(hcli("pool", "history", "fast", "--since", "2026-06-01T12:00:01Z", "-o", "json"))
    )
    assert len(later["samples"]) == 2
    assert "more samples: --since" in ok(hcli("pool", "history", "fast", "--limit", "1"))
    # a duration counts back from now: the samples (of the fake clock's June) are older
    assert ok(hcli("pool", "history", "fast", "--since", "1h")).startswith("no samples")


def test_pool_get_shows_the_trend_and_pool_filling(hcli, filled):
    out = ok(hcli("pool", "get", filled["fast"]))
    assert "capacity_trend: +30.00 GiB/day, full in ~3 days\n" in out
    assert "  - pool_filling: at its trend (+30.00 GiB/day)" in out
    concept = ok(hcli("pool", "get", "fast"))
    assert "    capacity_trend: +30.00 GiB/day, full in ~3 days\n" in concept
    assert "    condition: pool_filling:" in concept


def test_a_pool_without_samples(hcli, filled):
    out = ok(hcli("pool", "history", "flat", "--node", "node-b"))
    assert out == (
        "no samples of pool flat on node node-b yet\n"
        "trend: unknown (0 samples; needs 3 over 2 sample intervals)\n"
    )
    got = ok(hcli("pool", "get", filled["flat"]))
    assert "capacity_trend" not in got  # no line before the first sample
    assert "pool_filling" not in got


def test_bad_input(hcli, filled):
    assert "neither a duration" in usage(hcli("pool", "history", "fast", "--since", "soon"))
    assert 'pool "nope" not found' in failed(hcli("pool", "history", "nope"))
    assert "--node cannot be combined" in usage(
        hcli("pool", "history", filled["fast"], "--node", "node-a")
    )
