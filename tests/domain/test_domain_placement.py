"""The pure placement decision (``otherix.domain.placement.decide``), as a table."""

from __future__ import annotations

from typing import Any

import pytest

from otherix.domain.placement import GIB, Ask, Candidate, Unplaceable, decide, effective_bytes


def cand(node: str, pool_id: str | None = None, **kw) -> Candidate:
    fields: dict[str, Any] = {
        "pool_id": pool_id or f"id-{node}",
        "pool_name": "fast",
        "pool_path": f"/pools/{node}",
        "node_id": f"n-{node}",
        "node": node,
        "node_status": "ready",
        "architecture": "amd64",
        "reconciliation_status": "ready",
        "pressure_since": None,
        "effective_bytes": 100 * GIB,
    }
    fields.update(kw)
    return Candidate(**fields)


def ask(**kw) -> Ask:
    fields: dict[str, Any] = {"pool": "fast", "node": None, "disk_gib": 0, "arch": "amd64"}
    fields.update(kw)
    return Ask(**fields)


def outcome(result: Candidate | Unplaceable) -> str:
    return result.reason if isinstance(result, Unplaceable) else result.node


@pytest.mark.parametrize(
    ("request_", "candidates", "expected"),
    [
        (ask(), [], "pool_not_found"),
        (ask(), [cand("a")], "a"),
        (ask(), [cand("a", node_status="cordoned")], "no_eligible_nodes"),
        (ask(), [cand("a", node_status="unreachable")], "no_eligible_nodes"),
        (ask(), [cand("a", node_status="pending")], "no_eligible_nodes"),
        (ask(), [cand("a", node_status="gone")], "no_eligible_nodes"),
        (ask(), [cand("a", reconciliation_status="pending")], "no_eligible_nodes"),
        (ask(), [cand("a", reconciliation_status="failed")], "no_eligible_nodes"),
        (ask(arch="arm64"), [cand("a")], "no_eligible_nodes"),
        (ask(arch=None), [cand("a")], "a"),
        (ask(), [cand("a", pressure_since="2026-01-01T00:00:00Z")], "node_pressure"),
        # pressure wins over other exclusions when some instance was pressured
        (
            ask(),
            [cand("a", pressure_since="x"), cand("b", node_status="cordoned")],
            "node_pressure",
        ),
        # a pressured instance does not block another one
        (ask(), [cand("a", pressure_since="x"), cand("b")], "b"),
        (ask(node="b"), [cand("a")], "pool_not_on_node"),
        (ask(node="B"), [cand("a"), cand("b")], "b"),
        (ask(node="b"), [cand("a"), cand("b", node_status="cordoned")], "pool_not_on_node"),
        (ask(disk_gib=101), [cand("a")], "insufficient_resources"),
        (ask(disk_gib=100), [cand("a")], "a"),
        (ask(disk_gib=101), [cand("a", effective_bytes=None)], "a"),
        (ask(disk_gib=0), [cand("a", effective_bytes=0)], "a"),
        (ask(disk_gib=50), [cand("a", effective_bytes=10 * GIB), cand("b")], "b"),
        # tie-break: most effective bytes, then lower-case node name
        (ask(), [cand("b", effective_bytes=2 * GIB), cand("a", effective_bytes=1)], "b"),
        (ask(), [cand("B"), cand("a")], "a"),
        (ask(), [cand("a", effective_bytes=None), cand("b", effective_bytes=0)], "b"),
        # the hint is applied before room
        (
            ask(node="a", disk_gib=101),
            [cand("a"), cand("b", effective_bytes=None)],
            "insufficient_resources",
        ),
    ],
)
def test_decide(request_, candidates, expected):
    assert outcome(decide(request_, candidates)) == expected


def test_reasons_carry_the_contract_messages_and_details():
    assert decide(ask(), []) == Unplaceable(
        "pool_not_found", 'pool "fast" not found in cluster', {"pool": "fast"}
    )
    why = decide(ask(node="b"), [cand("a")])
    assert isinstance(why, Unplaceable)
    assert why.message == 'pool "fast" not present on node "b"'
    why = decide(ask(), [cand("a", node_status="cordoned", reconciliation_status="failed")])
    assert isinstance(why, Unplaceable)
    assert why.message == "no eligible node available"
    assert why.details["candidates"] == [
        {"node": "a", "pool_id": "id-a", "excluded": "node_cordoned"}
    ]
    why = decide(ask(disk_gib=200), [cand("a")])
    assert isinstance(why, Unplaceable)
    assert why.details == {
        "required_disk_bytes": 200 * GIB,
        "candidates": [{"node": "a", "pool_id": "id-a", "available_bytes_effective": 100 * GIB}],
    }


@pytest.mark.parametrize(
    ("available", "committed_gib", "expected"),
    [
        (None, None, None),  # never reported capacity
        (None, 5, None),
        (0, None, 0),
        (10 * GIB, None, 10 * GIB),
        (10 * GIB, 0, 10 * GIB),
        (10 * GIB, 4, 6 * GIB),
        (10 * GIB, 10, 0),
        (10 * GIB, 11, 0),  # over-committed: never below 0
        (GIB + 1, 1, 1),
    ],
)
def test_effective_bytes(available, committed_gib, expected):
    assert effective_bytes(available, committed_gib) == expected


@pytest.mark.parametrize(
    ("candidate", "excluded"),
    [
        (cand("a", node_status="cordoned"), "node_cordoned"),
        (cand("a", node_status="gone"), "node_gone"),
        # the node is checked before the architecture, the pool and pressure
        (cand("a", node_status="pending", architecture="arm64"), "node_pending"),
        (cand("a", architecture="arm64", reconciliation_status="failed"), "architecture_mismatch"),
        (cand("a", reconciliation_status="failed", pressure_since="x"), "pool_failed"),
        (cand("a", reconciliation_status="pending"), "pool_pending"),
        # a node that never reported its architecture is not excluded for it
        (cand("a", architecture=None, reconciliation_status="failed"), "pool_failed"),
    ],
)
def test_exclusion_reason_order(candidate, excluded):
    why = decide(ask(), [candidate])
    assert isinstance(why, Unplaceable)
    assert why.reason == "no_eligible_nodes"
    assert why.details["candidates"] == [{"node": "a", "pool_id": "id-a", "excluded": excluded}]


def test_pressure_details_and_hint_to_an_ineligible_instance():
    why = decide(ask(), [cand("a", pressure_since="2026-01-01T00:00:00Z")])
    assert why == Unplaceable(
        "node_pressure",
        "all candidate nodes under pressure",
        {
            "reason": "node_pressure",
            "filtered_due_to_pressure": [
                {
                    "node": "a",
                    "pool": "fast",
                    "conditions": ["disk_pressure"],
                    "disk_pressure_since": "2026-01-01T00:00:00Z",
                }
            ],
        },
    )
    why = decide(ask(node="B"), [cand("a"), cand("b", reconciliation_status="failed")])
    assert why == Unplaceable(
        "pool_not_on_node",
        'pool "fast" on node "B" is not eligible (pool_failed)',
        {"pool": "fast", "node": "B", "excluded": "pool_failed"},
    )


def test_a_cordoned_pool_instance_is_skipped_and_named_when_it_is_the_only_kind() -> None:
    both = [cand("a", cordoned=True), cand("b", effective_bytes=GIB)]
    assert outcome(decide(ask(), both)) == "b"  # b has less room, but a is cordoned
    every = decide(ask(), [cand("a", cordoned=True), cand("b", cordoned=True)])
    assert isinstance(every, Unplaceable)
    assert (every.reason, every.details) == ("pool_cordoned", {"pool": "fast", "nodes": ["a", "b"]})
    # one cordoned, one unreachable: not "cordoned" alone
    mixed = decide(ask(), [cand("a", cordoned=True), cand("b", node_status="unreachable")])
    assert isinstance(mixed, Unplaceable)
    assert mixed.reason == "no_eligible_nodes"
    excluded = {c["node"]: c["excluded"] for c in mixed.details["candidates"]}
    assert excluded == {"a": "pool_cordoned", "b": "node_unreachable"}
    hinted = decide(ask(node="a"), [cand("a", cordoned=True), cand("b")])
    assert isinstance(hinted, Unplaceable)
    assert (hinted.reason, hinted.details["excluded"]) == ("pool_not_on_node", "pool_cordoned")
