"""Strict input, case by case over the live OpenAPI document (issue 13, items 1 and 2).

Schemathesis cannot send a lone surrogate, so ``strictcases`` walks every
operation of the served ``/openapi.json`` and builds the hostile cases itself:
a lone surrogate in every string the operation takes (body fields, free-form
keys and values, query and path parameters, a header), nesting at 63, 64, 65
and 10,000 levels, ``NaN``/``Infinity``/``-Infinity`` at every body field, and
2^63-1, 2^63, 2^64, -1, -(2^63-1), -(2^63) at every integer field. A refused
case must be ``400 validation_failed`` naming the value; an in-range one must
not be a 5xx. After every single case, every list (pools, VMs, nodes, tasks,
users, as admin and as a developer), the seeded node's heartbeat and its watch
must answer 200. The counts go to the ``reliability`` table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from fuzzcampaign import NODE, Seed, seed
from strictcases import (
    AGENT_OPERATIONS,
    PUBLIC_OPERATIONS,
    Case,
    constant_cases,
    depth_cases,
    integer_cases,
    surrogate_cases,
)

from otherix.rbac import Role
from support.factories import ROLE_PASSWORD
from support.hostile import broken, views
from support.server import ADMIN, ApiServer, make_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@dataclass
class Target:
    server: ApiServer
    tokens: dict[str, str]
    seed: Seed
    doc: dict


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[Target]:
    server = ApiServer(make_settings(tmp_path_factory.mktemp("strict-fuzz"))).start()
    try:
        server.services.user_service.ensure_bootstrap_admin(*ADMIN)
        tokens = {"admin": server.login(*ADMIN)}
        server.add_user("developer", ROLE_PASSWORD, Role.DEVELOPER)
        tokens["developer"] = server.login("developer", ROLE_PASSWORD)
        seeded = seed(server.url, tokens, "admin")
        doc = httpx.get(f"{server.url}/openapi.json").json()
        yield Target(server, tokens, seeded, doc)
    finally:
        server.stop()


@dataclass
class Tally:
    sent: int = 0
    as_expected: int = 0
    view_checks: int = 0
    through: int = 0  # a 5xx, or a view that stopped answering 200 afterwards
    problems: list[str] = field(default_factory=list)
    by_status: Counter[int] = field(default_factory=Counter)


def judge(case: Case, r: httpx.Response) -> str | None:
    """None when the answer is what the case expects, else what was wrong."""
    if r.status_code >= 500:
        return f"{r.status_code} {r.text[:160]}"
    if case.expect == "any":
        return None
    if r.status_code != 400:
        return f"{r.status_code} {r.text[:160]}"
    err = r.json()["error"]
    details = err.get("details") or {}
    names = {details.get("field")} | {f.get("field") for f in details.get("fields", [])}
    if err["code"] != "validation_failed":
        return str(err)
    if case.where == "query":
        if case.field not in names and f"query.{case.field}" not in names:
            return str(err)
        return None
    if details.get("field") != case.field or details.get("in") != case.where:
        return str(err)
    return None


def run(target: Target, cases: list[Case]) -> Tally:
    tally = Tally()
    admin = {"Authorization": f"Bearer {target.tokens['admin']}"}
    agent = {"Authorization": f"Bearer {target.seed.node_credential}"}
    with httpx.Client(base_url=target.server.url, timeout=30) as c:
        for case in cases:
            auth = agent if case.operation in AGENT_OPERATIONS else admin
            if case.operation in PUBLIC_OPERATIONS:
                auth = {}
            headers = {**auth, **case.headers}
            if case.body is not None:
                headers["content-type"] = "application/json"
            url = case.path + (f"?{case.query}" if case.query else "")
            r = c.request(case.method, url, content=case.body, headers=headers)
            tally.sent += 1
            tally.by_status[r.status_code] += 1
            why = judge(case, r)
            statuses = views(target.server.url, target.tokens, NODE, target.seed.node_credential)
            tally.view_checks += len(statuses)
            if r.status_code >= 500 or broken(statuses):
                tally.through += 1
            if why is None and not broken(statuses):
                tally.as_expected += 1
            else:
                tally.problems.append(
                    f"{case.operation} {case.what}: {why or ''} views: {broken(statuses)}"
                )
    return tally


def record(reliability, name: str, tally: Tally, cases: list[Case]) -> None:
    operations = len({c.operation for c in cases})
    reliability.record(
        name,
        injected=tally.sent,
        survived=tally.as_expected,
        checked=tally.view_checks,
        lost=tally.through,
        detail=(
            f"{operations} operations of the live /openapi.json; answers "
            + ", ".join(f"{n} x {s}" for s, n in sorted(tally.by_status.items()))
            + "; after each case every list, the node's heartbeat and watch asked"
        ),
    )


def test_a_lone_surrogate_in_every_string_of_every_operation(target, reliability):
    cases = surrogate_cases(target.doc)
    tally = run(target, cases)
    record(reliability, "strict input: lone surrogate in every string field", tally, cases)
    every = {op["operationId"] for item in target.doc["paths"].values() for op in item.values()}
    assert {c.operation for c in cases} == every
    assert len(every) >= 40
    assert len(cases) >= 150
    assert tally.problems == [], "\n".join(tally.problems[:40])


def test_nesting_at_63_64_65_and_10000_levels(target, reliability):
    cases = depth_cases(target.doc)
    tally = run(target, cases)
    record(reliability, "strict input: nesting 63/64/65/10,000 on every body", tally, cases)
    assert {c.what.split()[1] for c in cases} == {"63", "64", "65", "10000"}
    assert tally.problems == [], "\n".join(tally.problems[:40])


def test_nan_and_infinity_at_every_body_field(target, reliability):
    cases = constant_cases(target.doc)
    tally = run(target, cases)
    record(reliability, "strict input: NaN/Infinity/-Infinity at every body field", tally, cases)
    assert len(cases) >= 100
    assert tally.problems == [], "\n".join(tally.problems[:40])


def test_integers_at_the_64_bit_edges_for_every_integer_field(target, reliability):
    cases = integer_cases(target.doc, target.seed.scan_task_id)
    tally = run(target, cases)
    record(
        reliability, "strict input: integers at +-2^63, 2^64 for every integer field", tally, cases
    )
    fields = {c.what.split(" at ")[-1] for c in cases if " at " in c.what}
    assert {"revision", "pools.0.capacity_bytes", "vcpus", "ttl_seconds", "progress"} <= fields
    assert any(c.where == "query" for c in cases)
    assert tally.problems == [], "\n".join(tally.problems[:40])
