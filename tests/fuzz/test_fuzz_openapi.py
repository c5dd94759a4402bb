"""Schemathesis against the control plane's own OpenAPI document, served live.

One campaign per role: a real uvicorn server is seeded with one of everything
(``fuzzcampaign.seed``), its ``/openapi.json`` is loaded, and every operation in it
gets schemathesis' coverage cases (admin) and Hypothesis-generated positive and
negative cases, some aimed at the seeded resources, each sent with the role's
bearer token (the node's credential for agent routes in the admin run) and,
on mutating routes, now and then an ``Idempotency-Key``. Generation is
derandomized, so a run is reproducible.

Checks: no 5xx and no broken connection; every response the schema documents
conforms to it (status, content type, headers, body); the token stayed valid
throughout; every operation of the schema got cases. Undocumented statuses are
checked separately (see ``test_every_status_sent_is_documented``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from fuzzcampaign import Campaign, Finding, seed

from otherix.rbac import Role
from support.server import ADMIN, ApiServer, make_settings

#: the first test of each role also waits for that role's campaign (module fixture)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROLES = ("admin", "operator", "developer", "viewer")
ROLE_PASSWORD = "role-password-1"
#: (coverage-phase cases per operation, Hypothesis examples per operation)
BUDGET = {"admin": (40, 20), "operator": (0, 6), "developer": (0, 6), "viewer": (0, 6)}


def tokens_for_every_role(server: ApiServer) -> dict[str, str]:
    server.services.user_service.ensure_bootstrap_admin(*ADMIN)
    tokens = {"admin": server.login(*ADMIN)}
    for role in ROLES[1:]:
        server.add_user(role, ROLE_PASSWORD, Role(role))
        tokens[role] = server.login(role, ROLE_PASSWORD)
    return tokens


@pytest.fixture(scope="module", params=ROLES)
def campaign(request, tmp_path_factory) -> Iterator[Campaign]:
    role: str = request.param
    server = ApiServer(make_settings(tmp_path_factory.mktemp(f"fuzz-{role}"))).start()
    try:
        tokens = tokens_for_every_role(server)
        run = Campaign(role, tokens[role], seed(server.url, tokens, role), *BUDGET[role])
        started = time.monotonic()
        run.run(server.url)
        run.seconds = time.monotonic() - started
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            run.final_me = client.get("/v1/users/me").status_code
            run.final_health = client.get("/healthz").status_code
        yield run
    finally:
        server.stop()


def report(findings: list[Finding], limit: int = 40) -> str:
    """One line per (operation, kind, status) with its count and first example."""
    groups: dict[tuple[str, str, int | None], list[Finding]] = {}
    for f in findings:
        groups.setdefault((f.operation, f.kind, f.status), []).append(f)
    lines = [f"{len(v)} x {v[0]}" for v in list(groups.values())[:limit]]
    if len(groups) > limit:
        lines.append(f"... and {len(groups) - limit} more groups")
    return "\n".join(lines)


def test_every_operation_of_the_live_schema_got_cases(campaign, reliability):
    sent = sum(campaign.cases.values())
    other = campaign.failed_cases - campaign.undocumented_only
    reliability.record(
        f"schemathesis: every operation, as {campaign.role}",
        injected=sent,
        survived=sent - campaign.failed_cases,
        checked=len(campaign.cases),
        lost=len(campaign.of_kind("lost")),
        detail=(
            f"{len(campaign.operations)} operations of the live /openapi.json, "
            f"{campaign.seconds:.0f} s; not survived: {campaign.undocumented_only} cases whose "
            f"only fault is an undocumented error status, {other} with a 5xx or schema violation"
        ),
    )
    assert len(campaign.operations) >= 40, campaign.operations
    assert len(set(campaign.operations)) == len(campaign.operations)
    assert set(campaign.cases) == set(campaign.operations)
    starved = [op for op in campaign.operations if campaign.cases[op] == 0]
    assert not starved, f"operations that got no case: {starved}"


def test_no_server_errors(campaign):
    found = campaign.of_kind("5xx", "lost")
    assert not found, f"{len(found)} server errors:\n{report(found)}"
    assert campaign.final_health == 200


def test_documented_responses_conform_to_the_schema(campaign):
    found = campaign.of_kind("schema")
    assert not found, f"{len(found)} schema violations:\n{report(found)}"


def test_the_token_was_honoured_throughout(campaign):
    """Had the campaign's own token been revoked half-way (a fuzzed logout, password
    change or user delete), everything after would only have tested the 401 path."""
    assert campaign.refused_our_token() == {}
    assert campaign.final_me == 200


def test_the_seeded_resources_were_reached(campaign):
    """Part of the cases name real resources: some answers on item routes are not 404."""
    reached = Counter(
        label.split(" ", 1)[1]
        for (label, status), n in campaign.statuses.items()
        if "{" in label and status < 300
        for _ in range(n)
    )
    paths = ["/v1/storage-pools/{id}", "/v1/nodes/{name}", "/v1/users/{user_ref}/api-tokens"]
    if campaign.role in ("admin", "operator"):  # task:read any; the seeded tasks are admin's
        paths.append("/v1/tasks/{task_id}")
    for path in paths:
        assert reached[path] > 0, (path, dict(reached))


def test_every_status_sent_is_documented(campaign):
    found = campaign.of_kind("undocumented")
    by_operation: dict[str, set[int]] = {}
    for f in found:
        by_operation.setdefault(f.operation, set()).add(f.status or 0)
    table = "\n".join(f"{op}: {sorted(s)}" for op, s in sorted(by_operation.items()))
    assert not found, f"{len(found)} responses with an undocumented status:\n{table}"
