"""``kill -9`` of the control-plane process in the middle of 500 concurrent pool creates.

The control plane runs as a real ``otherix-api serve`` process (``CpProcess``)
on SQLite or PostgreSQL. One node is enrolled through the real join flow (no
agent is needed: pools can be declared on a node that has not heartbeated
yet). 24 client threads then create pools ``burst-000`` .. ``burst-499`` on it,
each request carrying an ``Idempotency-Key`` derived from the pool name, as a
careful client does so that it can repeat a request whose answer it lost.

The kill lands when the k-th 201 arrives, k drawn uniformly from 25..475 by a
seeded RNG (``OTHERIX_FAULT_SEED`` to replay a run; the seed and k are
printed). Every request then falls in one of four groups: acknowledged (201
before the kill), in flight (sent, answer cut off), refused (connect failed:
the process was already gone) and unsent.

With the process dead, the test opens the store itself and checks: the engine's
integrity (SQLite ``integrity_check`` and ``foreign_key_check``; PostgreSQL
amcheck ``bt_index_check`` with ``heapallindexed`` on every btree index), no
orphan for any foreign key, every pool has its status row and the node's
``desired_revision`` moved once per pool (a create is one transaction), every
acknowledged create is there exactly once with the id it was acknowledged with,
every in-flight one at most once, and nothing that never reached the server.

Then the control plane is started again on the same port and store: the API
lists the same, each acknowledged create replays its original answer for its
key, every other create succeeds when retried with its key (an in-flight one
that landed answers with its stored outcome: a replay, or 409 when the process
died between the pool's commit and the answer's; a key the killed process had
claimed answers 409 "in progress" until the claim is taken over, and the
client retries), and the burst ends with
exactly 500 pools and a store that passes the same checks.
"""

from __future__ import annotations

import os
import queue
import random
import secrets
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cphelpers import POOLS_PREFIX, CpProcess, join_node, list_pools, store_conn, store_problems

from otherix.store.schema import nodes, pool_status, storage_pools

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOTAL = 500
CLIENTS = 24
#: seconds before a dead process's Idempotency-Key claim is taken over (PostgreSQL)
CLAIM_TIMEOUT = 3
NODE = "kill-node"
NAMES = [f"burst-{i:03d}" for i in range(TOTAL)]


@dataclass
class Burst:
    kill_at: int
    acked: dict[str, str] = field(default_factory=dict)  # name -> id in the 201
    in_flight: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    unexpected: dict[str, str] = field(default_factory=dict)
    killed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _body(name: str) -> dict[str, Any]:
    return {"node": NODE, "name": name, "type": "local_dir", "path": POOLS_PREFIX + name}


def _run_burst(cp: CpProcess, keys: dict[str, str], kill_at: int) -> Burst:
    burst = Burst(kill_at)
    todo: queue.Queue[str] = queue.Queue()
    for name in NAMES:
        todo.put(name)

    def worker() -> None:
        with cp.client() as c:
            while not burst.killed.is_set():
                try:
                    name = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    r = c.post(
                        "/v1/storage-pools",
                        json=_body(name),
                        headers={"Idempotency-Key": keys[name]},
                    )
                except httpx.ConnectError:
                    with burst.lock:
                        burst.refused.add(name)  # never reached the server
                    continue
                except httpx.TransportError:
                    with burst.lock:
                        burst.in_flight.add(name)  # sent; the answer was cut off
                    continue
                if r.status_code != 201:
                    with burst.lock:
                        burst.unexpected[name] = f"{r.status_code} {r.text[:200]}"
                    continue
                with burst.lock:
                    burst.acked[name] = r.json()["id"]
                    kill_now = len(burst.acked) == kill_at
                if kill_now:
                    cp.kill(signal.SIGKILL)
                    burst.killed.set()

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        for f in [pool.submit(worker) for _ in range(CLIENTS)]:
            f.result(timeout=240)
    return burst


def _store_pools(db_url: str) -> tuple[dict[str, list[str]], int, int]:
    """The node's pools in the store (name -> ids), its revision and its status rows."""
    with store_conn(db_url) as conn:
        node = conn.execute(
            sa.select(nodes.c.id, nodes.c.desired_revision).where(nodes.c.name_lower == NODE)
        ).one()
        rows = conn.execute(
            sa.select(storage_pools.c.name, storage_pools.c.id).where(
                storage_pools.c.node_id == node.id
            )
        ).all()
        statuses = conn.execute(
            sa.select(sa.func.count())
            .select_from(pool_status.join(storage_pools))
            .where(storage_pools.c.node_id == node.id)
        ).scalar_one()
    out: dict[str, list[str]] = {}
    for name, pool_id in rows:
        out.setdefault(name, []).append(pool_id)
    return out, int(node.desired_revision), int(statuses)


def _seed() -> int:
    return int(os.environ.get("OTHERIX_FAULT_SEED") or secrets.randbits(32))


def test_sigkill_mid_burst_of_500_creates_loses_no_acknowledged_pool(
    tmp_path, db_url, reliability
) -> None:
    backend = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    seed = _seed()
    rng = random.Random(seed)
    kill_at = rng.randint(25, TOTAL - 25)
    keys = {name: f"burst-{seed}-{name}" for name in NAMES}
    print(f"[{backend}] OTHERIX_FAULT_SEED={seed}: SIGKILL at the {kill_at}th 201")

    # A claim left by the killed process blocks its key until taken over: at once on
    # SQLite (another process made it), after this timeout on PostgreSQL.
    cp = CpProcess(
        tmp_path / "api",
        database_url=db_url,
        env={"OTHERIX_SERVER__IDEMPOTENCY_CLAIM_TIMEOUT": f"{CLAIM_TIMEOUT}s"},
    )
    try:
        cp.start()
        join_node(cp, NODE)
        _, revision_before, _ = _store_pools(db_url)

        burst = _run_burst(cp, keys, kill_at)
        assert burst.killed.is_set(), f"the burst ended without the kill: {burst.unexpected}"
        assert not cp.alive
        assert burst.unexpected == {}, burst.unexpected
        sent = set(burst.acked) | burst.in_flight
        never_reached = set(NAMES) - sent  # refused or never sent
        print(
            f"acked={len(burst.acked)} in_flight={len(burst.in_flight)} "
            f"refused={len(burst.refused)} unsent={len(never_reached - burst.refused)}"
        )

        # --- the store as the crash left it (the process is dead) ------------------------
        crash_report = store_problems(db_url)
        rows, revision, statuses = _store_pools(db_url)
        lost_acked = sorted(n for n, pid in burst.acked.items() if rows.get(n) != [pid])
        landed = {n for n in burst.in_flight if n in rows}
        in_flight_dups = sorted(n for n in burst.in_flight if len(rows.get(n, [])) > 1)
        phantoms = sorted(n for n in never_reached if n in rows)
        pool_rows = sum(len(ids) for ids in rows.values())

        # --- restart on the same port and store ------------------------------------------
        cp.start()
        with cp.client() as c:
            listed = list_pools(c, node=NODE)
        names_listed = Counter(p["name"] for p in listed)
        ids_listed = {p["name"]: p["id"] for p in listed}
        api_lost = sorted(
            n for n, pid in burst.acked.items() if names_listed[n] != 1 or ids_listed[n] != pid
        )

        clients: list[httpx.Client] = []
        local = threading.local()

        def post(name: str) -> httpx.Response:
            if not hasattr(local, "client"):  # one client per thread: keep-alive, as in the burst
                local.client = cp.client()
                clients.append(local.client)
            deadline = time.monotonic() + CLAIM_TIMEOUT + 30
            while True:  # as a client does: a key still "in progress" is retried later
                r = local.client.post(
                    "/v1/storage-pools", json=_body(name), headers={"Idempotency-Key": keys[name]}
                )
                busy = (
                    r.status_code == 409
                    and r.json()["error"].get("details", {}).get("reason")
                    == "idempotency_key_in_progress"
                )
                if not busy or time.monotonic() > deadline:
                    return r
                time.sleep(0.5)

        try:
            with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
                replays = dict(zip(burst.acked, pool.map(post, burst.acked), strict=True))
                retried_names = [n for n in NAMES if n not in burst.acked]
                retries = dict(zip(retried_names, pool.map(post, retried_names), strict=True))
        finally:
            for c in clients:
                c.close()

        bad_replays = sorted(
            n
            for n, r in replays.items()
            if r.status_code != 201
            or r.headers.get("idempotent-replay") != "true"
            or r.json()["id"] != burst.acked[n]
        )
        bad_retries = {}
        for n, r in retries.items():
            if n in landed:
                ok = (
                    r.status_code == 201
                    and r.headers.get("idempotent-replay") == "true"
                    and r.json()["id"] == rows[n][0]
                ) or (r.status_code == 409 and r.json()["error"]["code"] == "conflict")
            else:
                ok = r.status_code == 201 and r.headers.get("idempotent-replay") is None
            if not ok:
                bad_retries[n] = f"{r.status_code} {r.text[:200]}"

        outcomes = Counter(
            "replayed"
            if r.headers.get("idempotent-replay") == "true"
            else ("created" if r.status_code == 201 else str(r.status_code))
            for r in retries.values()
        )
        print(f"in flight and stored: {len(landed)}; retries after restart: {dict(outcomes)}")

        # --- the burst, completed -----------------------------------------------------------
        with cp.client() as c:
            final = Counter(p["name"] for p in list_pools(c, node=NODE))
        cp.stop()
        final_report = store_problems(db_url)
        final_rows, final_revision, final_statuses = _store_pools(db_url)
    finally:
        cp.stop()

    lost = len(set(lost_acked) | set(api_lost) | set(bad_replays)) + len(in_flight_dups)
    restarted_clean = (
        not crash_report.problems
        and not final_report.problems
        and final == Counter(NAMES)
        and not bad_retries
    )
    integrity = (
        "SQLite integrity_check + foreign_key_check"
        if backend == "sqlite"
        else f"PostgreSQL amcheck on {final_report.indexes_checked} btree indexes"
    )
    reliability.record(
        "kill -9 control plane mid-burst of 500 pool creates",
        injected=1,
        survived=int(restarted_clean and lost == 0),
        checked=len(burst.acked) + len(burst.in_flight),
        lost=lost,
        detail=(
            f"{CLIENTS} clients with Idempotency-Key, SIGKILL at a seeded random 201 "
            f"(25..475); acknowledged checked exactly once, in-flight at most once, "
            f"{TOTAL} pools after retrying; {integrity} + orphan checks on "
            f"{final_report.foreign_keys_checked} foreign keys"
        ),
    )

    where = f"(OTHERIX_FAULT_SEED={seed}, {backend}, kill at {kill_at})"
    assert crash_report.problems == [], f"store after SIGKILL {where}: {crash_report.problems}"
    assert lost_acked == [], f"acknowledged creates missing or changed in the store {where}"
    assert in_flight_dups == [], f"in-flight creates stored twice {where}"
    assert phantoms == [], f"creates that never reached the server are in the store {where}"
    assert statuses == pool_rows, f"pools without a status row {where}"
    assert revision - revision_before == pool_rows, f"revision bumps != pools {where}"
    assert api_lost == [], f"acknowledged creates not listed once after restart {where}"
    assert bad_replays == [], f"acknowledged creates not replayed for their key {where}"
    assert bad_retries == {}, f"retries after restart {where}"
    assert final == Counter(NAMES), f"the burst did not end with {TOTAL} pools {where}"
    assert final_report.problems == [], f"store after the burst {where}: {final_report.problems}"
    assert sorted(final_rows) == NAMES
    assert all(len(ids) == 1 for ids in final_rows.values())
    assert final_statuses == TOTAL
    assert final_revision - revision_before == TOTAL
    if backend == "postgresql":
        assert final_report.indexes_checked >= 10, "amcheck ran on too few indexes"
