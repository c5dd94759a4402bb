"""A PostgreSQL outage under two control-plane replicas: every answer is a clean
503, and requests whose Idempotency-Key was claimed when the store failed run
again as soon as it is back.

Two ``otherix-api serve`` processes (``CpProcess``) share a private PostgreSQL
(``privatepg``: the machine's shared server is never stopped). A trigger makes
the insert of pools named ``slow-*`` wait in the database, so two keyed pool
creates sent to replica A have claimed their keys and are inside their route
when the server is stopped (``pg_ctl stop -m fast`` cuts every session). Both
answer 503 ``store_unavailable`` with ``Retry-After``, and the release of their
claims fails too, the store being down.

While the store is down, every operation of the live schema (user routes with
an admin token, agent routes with a node credential, public ones) is called
once, and creates with and without an Idempotency-Key: none may answer 500,
and every 503 is ``store_unavailable`` with ``Retry-After``.

After the server is back (and the trigger dropped):
- the first key is retried at replica A: it runs at once (201, not 409
  ``idempotency_key_in_progress`` for ``server.idempotency_claim_timeout``,
  120 s), because A knows the claim is one of its own that is no longer in flight;
- replica A's worker releases the second claim by itself, and the second key,
  retried at replica B (which cannot know A's claims), runs at once too.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from cphelpers import POOLS_PREFIX, CpProcess, join_node
from privatepg import private_postgres

from support.harness import wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.postgres,
]

NODE = "outage-node"
SLOW = """
CREATE FUNCTION otherix_test_slow() RETURNS trigger AS $$
BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER otherix_test_slow BEFORE INSERT ON storage_pools
FOR EACH ROW WHEN (NEW.name LIKE 'slow-%') EXECUTE FUNCTION otherix_test_slow();
"""


def _body(name: str) -> dict[str, Any]:
    return {"node": NODE, "name": name, "type": "local_dir", "path": POOLS_PREFIX + name}


def _create(cp: CpProcess, name: str, key: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    with cp.client(timeout=90) as c:
        return c.post("/v1/storage-pools", json=_body(name), headers=headers)


def _walk(cp: CpProcess, credential: str) -> list[tuple[str, str, int, str]]:
    """Every operation of the live schema once: (method, path, status, code)."""
    schema = httpx.get(f"{cp.url}/openapi.json", timeout=30).json()
    out = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in ("get", "put", "post", "patch", "delete"):
                continue
            filled = re.sub(
                r"\{(\w+)\}",
                lambda m: NODE if m.group(1) == "name" else str(uuid.uuid4()),
                path,
            )
            agent = filled.endswith(("/heartbeat", "/watch")) or "/tasks/" in filled
            token = credential if agent and filled.startswith("/v1/nodes/") else cp.token
            kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
            if method in ("post", "put", "patch"):
                kwargs["json"] = {}
            if op["operationId"] == "login":
                kwargs["json"] = {"username": "admin", "password": "whatever-password"}
            if op["operationId"] == "nodeWatch":
                kwargs["params"] = {"revision": 0, "timeout": 0}
            r = httpx.request(method, f"{cp.url}{filled}", timeout=60, **kwargs)
            code = r.json().get("error", {}).get("code", "") if r.content else ""
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) > 0, (method, filled)
            out.append((method.upper(), filled, r.status_code, code))
    return out


def _pending(pg, key: str) -> list[tuple[object, ...]]:
    return pg.rows(f"SELECT status_code FROM idempotency_keys WHERE key = '{key}'")


@pytest.mark.timeout(300)
def test_a_postgresql_outage_answers_503_and_claimed_keys_run_again_at_once(
    tmp_path, reliability
) -> None:
    with private_postgres() as pg:
        a = CpProcess(tmp_path / "a", database_url=pg.url)
        b = CpProcess(tmp_path / "b", database_url=pg.url)
        try:
            a.start()
            b.start()
            credential = join_node(a, NODE)
            pg.execute(SLOW)
            keys = {"slow-1": f"k1-{uuid.uuid4()}", "slow-2": f"k2-{uuid.uuid4()}"}
            first: dict[str, httpx.Response] = {}

            def send(name: str) -> None:
                first[name] = _create(a, name, keys[name])

            threads = [threading.Thread(target=send, args=(n,)) for n in keys]
            for t in threads:
                t.start()
            wait_until(
                lambda: all(_pending(pg, k) == [(0,)] for k in keys.values()),
                30,
                "both keys claimed, their requests waiting in the insert",
            )
            pg.stop()  # the outage: both requests are inside their route
            for t in threads:
                t.join(60)
            during = {
                "with a key": _create(a, "during-1", f"k3-{uuid.uuid4()}"),
                "without a key": _create(a, "during-2", None),
            }
            walked = _walk(a, credential)
            pg.start()
            pg.execute("DROP TRIGGER otherix_test_slow ON storage_pools")

            retry_at_a = _create(a, "slow-1", keys["slow-1"])
            wait_until(lambda: _pending(pg, keys["slow-2"]) == [], 30, "A releasing key 2")
            retry_at_b = _create(b, "slow-2", keys["slow-2"])
            after = _create(b, "after", None)
        finally:
            a.stop()
            b.stop()

    refused = [*first.values(), *during.values()]
    not_503 = [(r.status_code, r.text[:200]) for r in refused if r.status_code != 503]
    for r in refused:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "store_unavailable", r.text
            assert int(r.headers["retry-after"]) > 0
    statuses = Counter(status for _, _, status, _ in walked)
    server_errors = [
        w for w in walked if w[2] >= 500 and (w[2], w[3]) != (503, "store_unavailable")
    ]
    retries = {"retry of key 1 at A": retry_at_a, "retry of key 2 at B": retry_at_b}
    bad_retries = {
        k: (r.status_code, r.text[:200]) for k, r in retries.items() if r.status_code != 201
    }
    reliability.record(
        "PostgreSQL outage: 503 everywhere, claimed keys run again at once",
        injected=1,
        survived=int(not not_503 and not server_errors and not bad_retries),
        checked=len(refused) + len(walked) + len(retries),
        lost=len(not_503) + len(server_errors) + len(bad_retries),
        detail=f"2 replicas, private PostgreSQL stopped with 2 keyed creates inside their "
        f"route; {len(walked)} operations walked during the outage ({dict(statuses)}); "
        "retries at the claiming replica and at the other one",
    )
    assert not not_503, not_503
    assert not server_errors, server_errors
    assert statuses[503] >= len(walked) - 10, statuses  # only input errors and /healthz differ
    assert not bad_retries, bad_retries
    assert "idempotent-replay" not in retry_at_a.headers
    assert after.status_code == 201, after.text
