"""Two API replicas on one PostgreSQL: a change made through replica A wakes
an agent's watch parked on replica B within milliseconds (LISTEN/NOTIFY),
not at the watch's 5 s safety re-check."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from support.server import ADMIN, ApiServer, make_settings

pytestmark = pytest.mark.postgres


def test_a_change_on_one_replica_wakes_a_watch_on_another(tmp_path, pg_database):
    from support import pg

    pg.truncate_all(pg_database)
    a = ApiServer(make_settings(tmp_path / "a", pg_database)).start()
    b = ApiServer(make_settings(tmp_path / "b", pg_database)).start()
    try:
        a.services.user_service.ensure_bootstrap_admin(*ADMIN)
        admin = {"Authorization": f"Bearer {a.login(*ADMIN)}"}
        join = httpx.post(f"{a.url}/v1/nodes/join-tokens", json={}, headers=admin).json()["token"]
        cred = httpx.post(f"{a.url}/v1/nodes/join", json={"join_token": join, "name": "n1"}).json()[
            "credential"
        ]
        agent = {"Authorization": f"Bearer {cred}"}
        revision = httpx.get(
            f"{b.url}/v1/nodes/n1/watch", params={"revision": 0, "timeout": 0}, headers=agent
        ).json()["desired"]["revision"]
        answer: list[tuple[float, dict]] = []

        def watch() -> None:
            r = httpx.get(
                f"{b.url}/v1/nodes/n1/watch",
                params={"revision": revision, "timeout": 30},
                headers=agent,
                timeout=60,
            )
            answer.append((time.monotonic(), r.json()))

        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.5)  # parked on replica B
        started = time.monotonic()
        r = httpx.post(
            f"{a.url}/v1/storage-pools",
            json={"node": "n1", "name": "fast", "path": f"{tmp_path}/a/pools/fast"},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        t.join(timeout=30)
        assert answer, "the watch never answered"
        woke_at, body = answer[0]
        assert body["changed"] is True
        assert [p["name"] for p in body["desired"]["declared_pools"]] == ["fast"]
        # Well under the 5 s periodic re-check: the NOTIFY from replica A did it.
        assert woke_at - started < 2.0
    finally:
        b.stop()
        a.stop()
