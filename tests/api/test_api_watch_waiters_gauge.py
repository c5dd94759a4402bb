"""``/metrics`` shows how many agent watches are parked right now
(``otherix_watch_waiters``): one while a watch waits, none once it is answered."""

from __future__ import annotations

import re
import threading

from support.harness import wait_until

HB = {"agent_version": "t", "architecture": "amd64", "revision": 0, "digest": "0" * 64}


def _waiters(client) -> float:
    text = client.get("/metrics").text
    match = re.search(r"^otherix_watch_waiters (\S+)$", text, re.MULTILINE)
    assert match, "otherix_watch_waiters missing from /metrics"
    return float(match.group(1))


def test_parked_watches_are_counted(api):
    with api.client("admin") as admin:
        join = admin.post("/v1/nodes/join-tokens", json={}).json()["token"]
        cred = admin.post("/v1/nodes/join", json={"join_token": join, "name": "n1"}).json()[
            "credential"
        ]
        node = {"Authorization": f"Bearer {cred}"}
        assert admin.post("/v1/nodes/n1/heartbeat", json=HB, headers=node).status_code == 200
        revision = admin.get(
            "/v1/nodes/n1/watch", params={"revision": 0, "timeout": 0}, headers=node
        ).json()["desired"]["revision"]
        assert _waiters(admin) == 0
        answers: list[dict] = []
        t = threading.Thread(
            target=lambda: answers.append(
                admin.get(
                    "/v1/nodes/n1/watch",
                    params={"revision": revision, "timeout": 20},
                    headers=node,
                    timeout=30,
                ).json()
            )
        )
        t.start()
        wait_until(lambda: _waiters(admin) == 1 or None, what="the watch to park")
        created = admin.post(
            "/v1/storage-pools",
            json={"node": "n1", "name": "p1", "path": f"{api.server.settings.data_dir}/pools/p1"},
        )
        assert created.status_code == 201, created.text
        t.join(timeout=30)
        assert answers
        assert answers[0]["changed"] is True
        assert _waiters(admin) == 0
