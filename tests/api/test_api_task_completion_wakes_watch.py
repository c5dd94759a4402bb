"""When a node reports a task finished, its parked watch answers at once with
a desired state that no longer lists the task (not at the 5 s re-check)."""

from __future__ import annotations

import threading
import time

HB = {"agent_version": "t", "architecture": "amd64", "revision": 0, "digest": "0" * 64}


def test_finishing_a_task_wakes_the_nodes_watch(api, tmp_path):
    with api.client("admin") as admin:
        join = admin.post("/v1/nodes/join-tokens", json={}).json()["token"]
        cred = admin.post("/v1/nodes/join", json={"join_token": join, "name": "n1"}).json()[
            "credential"
        ]
        node = {"Authorization": f"Bearer {cred}"}
        pool_path = f"{api.server.settings.data_dir}/pools/p1"
        assert (
            admin.post(
                "/v1/storage-pools", json={"node": "n1", "name": "p1", "path": pool_path}
            ).status_code
            == 201
        )
        report = {**HB, "pools": [{"name": "p1", "reconciliation_status": "ready"}]}
        assert admin.post("/v1/nodes/n1/heartbeat", json=report, headers=node).status_code == 200
        task_id = admin.post("/v1/storage-pools/p1/scan").json()["task_id"]
        desired = admin.get(
            "/v1/nodes/n1/watch", params={"revision": 0, "timeout": 0}, headers=node
        ).json()["desired"]
        assert [t["id"] for t in desired["tasks"]] == [task_id]
        answers: list[tuple[float, dict]] = []

        def watch() -> None:
            r = admin.get(
                "/v1/nodes/n1/watch",
                params={"revision": desired["revision"], "timeout": 20},
                headers=node,
                timeout=30,
            )
            answers.append((time.monotonic(), r.json()))

        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.3)
        started = time.monotonic()
        done = admin.post(
            f"/v1/nodes/n1/tasks/{task_id}",
            json={"status": "success", "result": {"capacity_bytes": 100, "available_bytes": 50}},
            headers=node,
        )
        assert done.status_code == 200
        assert done.json()["status"] == "success"
        t.join(timeout=30)
    woke_at, body = answers[0]
    assert body["changed"] is True
    assert body["desired"]["tasks"] == []
    assert woke_at - started < 2.0
