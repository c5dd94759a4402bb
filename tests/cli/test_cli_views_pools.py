"""Storage-pool presentation: STATUS, list table, text views, YAML, delete messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from otherix.cli.output import render_yaml_stream
from otherix.cli.views.pools import (
    ambiguous_text,
    available_cell,
    blocked_delete_text,
    concept_text,
    default_pool_text,
    list_manifests,
    paging_footer,
    pool_list_table,
    pool_manifests,
    pool_status,
    pool_text,
)

NOW = datetime(2025, 6, 10, 12, 0, 0, tzinfo=UTC)
GIB = 1024**3
ID_A = "8b1d2c3e-0000-4000-8000-00000000000a"
ID_B = "9c2e3d4f-0000-4000-8000-00000000000b"
PATH = "/var/lib/otherix/pools/default"
SHA = "7f3c1a9b0e2d" + "4" * 52
IMAGE = {
    "name": "ubuntu-24.04-minimal-cloudimg-arm64.img",
    "sha256": SHA,
    "size_bytes": 612 * 1024**2,
    "virtual_size_bytes": 3 * GIB,
    "format": "qcow2",
    "imported_at": "2025-06-08T10:00:00.123456789Z",
}


def make_pool(**overrides: Any) -> dict[str, Any]:
    pool: dict[str, Any] = {
        "id": ID_A,
        "node": "node-a",
        "node_status": "ready",
        "name": "default",
        "type": "local_dir",
        "path": PATH,
        "capacity_bytes": 100 * GIB,
        "available_bytes": int(80.1 * GIB),
        "available_bytes_effective": int(80.1 * GIB),
        "reported_at": "2025-06-10T11:45:00Z",
        "is_cluster_default": True,
        "config": {},
        "disk_pressure": None,
        "reconciliation_status": "ready",
        "last_reconciled_at": "2025-06-10T11:59:30Z",
        "reconciliation_error": None,
        "images": [],
        "created_at": "2025-06-08T09:00:00Z",
        "updated_at": "2025-06-09T09:00:00Z",
    }
    pool.update(overrides)
    return pool


PRESSURE = {"since": "2025-06-10T11:55:00Z", "consecutive_count": 2}

# --- STATUS: worst-of rule -------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"reconciliation_status": "failed"}, "failed"),
        ({"node_status": "unreachable"}, "unreachable"),
        ({"node_status": "cordoned"}, "cordoned"),
        ({"disk_pressure": PRESSURE}, "under_pressure"),
        ({"reconciliation_status": "pending"}, "pending"),
        ({}, "ready"),
    ],
)
def test_status_each_level_alone(overrides, expected):
    assert pool_status(make_pool(**overrides)) == expected


LEVELS: list[tuple[str, dict[str, Any]]] = [
    ("failed", {"reconciliation_status": "failed"}),
    ("unreachable", {"node_status": "unreachable"}),
    ("cordoned", {"node_status": "cordoned"}),
    ("under_pressure", {"disk_pressure": PRESSURE}),
    ("pending", {"reconciliation_status": "pending"}),
]
PAIRS = [
    (hi, lo)
    for i, hi in enumerate(LEVELS)
    for lo in LEVELS[i + 1 :]
    # unreachable/cordoned (node) and failed/pending (reconciliation) share a field
    if hi[1].keys() != lo[1].keys()
]


@pytest.mark.parametrize(("high", "low"), PAIRS, ids=[f"{h[0]}>{lo[0]}" for h, lo in PAIRS])
def test_status_pairwise_precedence(high, low):
    assert pool_status(make_pool(**low[1], **high[1])) == high[0]


def test_status_everything_wrong_is_failed():
    pool = make_pool(
        reconciliation_status="failed", node_status="unreachable", disk_pressure=PRESSURE
    )
    assert pool_status(pool) == "failed"


@pytest.mark.parametrize("node_status", [None, "draining", "gone", "pending", "ready"])
@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "ready"),
        ({"reconciliation_status": "pending"}, "pending"),
        ({"disk_pressure": PRESSURE}, "under_pressure"),
        ({"reconciliation_status": "failed"}, "failed"),
    ],
)
def test_status_node_status_falls_through(node_status, overrides, expected):
    assert pool_status(make_pool(node_status=node_status, **overrides)) == expected


def test_status_missing_keys_is_ready():
    assert pool_status({}) == "ready"


# --- AVAILABLE, table, footer ----------------------------------------------


@pytest.mark.parametrize(
    ("raw", "effective", "expected"),
    [
        (None, None, "-"),
        (int(80.1 * GIB), int(80.1 * GIB), "80.1GiB"),
        (int(80.1 * GIB), None, "80.1GiB"),
        (int(80.1 * GIB), 60 * GIB, "80.1GiB (effective 60.0GiB free)"),
        (10 * GIB, 0, "10.0GiB (effective 0B free)"),
    ],
)
def test_available_cell(raw, effective, expected):
    pool = make_pool(available_bytes=raw, available_bytes_effective=effective)
    assert available_cell(pool) == expected


def _two_nodes() -> list[dict[str, Any]]:
    return [
        make_pool(),
        make_pool(
            id=ID_B, node="node-b", available_bytes=int(79.4 * GIB), available_bytes_effective=None
        ),
    ]


def test_list_table_brief_example():
    assert pool_list_table(_two_nodes(), NOW, show_ids=False) == (
        "NAME     NODE    TYPE       PATH                            AVAILABLE  STATUS  DEFAULT  AGE\n"  # noqa: E501
        "default  node-a  local_dir  /var/lib/otherix/pools/default  80.1GiB    ready   yes      2d\n"  # noqa: E501
        "default  node-b  local_dir  /var/lib/otherix/pools/default  79.4GiB    ready   yes      2d\n"  # noqa: E501
    )


def test_list_table_show_ids_prepends_id_column():
    lines = pool_list_table(_two_nodes(), NOW, show_ids=True).splitlines()
    assert lines[0].split() == [
        "ID",
        "NAME",
        "NODE",
        "TYPE",
        "PATH",
        "AVAILABLE",
        "STATUS",
        "DEFAULT",
        "AGE",
    ]
    assert lines[1].startswith(f"{ID_A}  default  node-a")
    assert lines[2].startswith(f"{ID_B}  default  node-b")


def test_list_table_non_default_orphan_unparsable_age_and_effective():
    pool = make_pool(
        name="scratch",
        node="",
        node_status=None,
        is_cluster_default=False,
        available_bytes=None,
        available_bytes_effective=None,
        reconciliation_status="pending",
        created_at="not-a-time",
    )
    assert pool_list_table([pool], NOW, show_ids=False) == (
        "NAME     NODE        TYPE       PATH                            AVAILABLE  STATUS   DEFAULT  AGE\n"  # noqa: E501
        "scratch  <orphaned>  local_dir  /var/lib/otherix/pools/default  -          pending           -\n"  # noqa: E501
    )


def test_list_table_empty_is_header_only():
    assert pool_list_table([], NOW, show_ids=False) == (
        "NAME  NODE  TYPE  PATH  AVAILABLE  STATUS  DEFAULT  AGE\n"
    )


def test_paging_footer():
    assert paging_footer("otherix pool list", None) == ""
    assert paging_footer("otherix pool list", "") == ""
    assert paging_footer("otherix pool list", "abc123") == (
        "\nMore results - next page:\n  otherix pool list --cursor abc123\n"
    )


# --- text views ------------------------------------------------------------


def test_pool_text_full_layout():
    pool = make_pool(images=[IMAGE], available_bytes_effective=60 * GIB)
    assert pool_text(pool, NOW) == (
        f"id: {ID_A}\n"
        "name: default\n"
        "node: node-a\n"
        "type: local_dir\n"
        f"path: {PATH}\n"
        "available: 80.1GiB (effective 60.0GiB free)\n"
        "capacity_bytes: 100.0GiB\n"
        "reported_at: 2025-06-10T11:45:00Z\n"
        "is_cluster_default: true\n"
        "pressure:\n"
        "  disk: none\n"
        "reconciliation_status: ready\n"
        "last_reconciled_at: 2025-06-10T11:59:30Z\n"
        "images:\n"
        "  - ubuntu-24.04-minimal-cloudimg-arm64.img (sha 7f3c1a9b0e2d, 612.0MiB)\n"
        "created_at: 2025-06-08T09:00:00Z\n"
        "updated_at: 2025-06-09T09:00:00Z\n"
    )


def test_pool_text_fresh_failed_under_pressure():
    pool = make_pool(
        capacity_bytes=None,
        available_bytes=None,
        available_bytes_effective=None,
        reported_at=None,
        is_cluster_default=False,
        disk_pressure=PRESSURE,
        reconciliation_status="failed",
        last_reconciled_at=None,
        reconciliation_error="mkdir: permission denied",
    )
    assert pool_text(pool, NOW) == (
        f"id: {ID_A}\n"
        "name: default\n"
        "node: node-a\n"
        "type: local_dir\n"
        f"path: {PATH}\n"
        "available: -\n"
        "capacity_bytes: -\n"
        "is_cluster_default: false\n"
        "pressure:\n"
        "  disk: active since 5m ago (consecutive_count=2)\n"
        "reconciliation_status: failed\n"
        "reconciliation_error: mkdir: permission denied\n"
        "created_at: 2025-06-08T09:00:00Z\n"
        "updated_at: 2025-06-09T09:00:00Z\n"
    )


def test_concept_text_two_instances():
    concept = {
        "name": "default",
        "type": "local_dir",
        "is_cluster_default": True,
        "instances": [
            make_pool(images=[IMAGE]),
            make_pool(
                id=ID_B,
                node="node-b",
                available_bytes=None,
                available_bytes_effective=None,
                disk_pressure=PRESSURE,
                reconciliation_status="failed",
                reconciliation_error="disk full",
            ),
        ],
    }
    assert concept_text(concept, NOW) == (
        "name: default\n"
        "type: local_dir\n"
        "is_cluster_default: true\n"
        "instances:\n"
        "  - node: node-a\n"
        f"    id: {ID_A}\n"
        f"    path: {PATH}\n"
        "    available: 80.1GiB\n"
        "    disk_pressure: none\n"
        "    reconciliation_status: ready\n"
        "    image: ubuntu-24.04-minimal-cloudimg-arm64.img (sha 7f3c1a9b0e2d, 612.0MiB)\n"
        "  - node: node-b\n"
        f"    id: {ID_B}\n"
        f"    path: {PATH}\n"
        "    available: -\n"
        "    disk_pressure: active since 5m ago (consecutive_count=2)\n"
        "    reconciliation_status: failed\n"
        "    reconciliation_error: disk full\n"
    )


def test_concept_text_no_instances():
    concept = {"name": "x", "type": "local_dir", "is_cluster_default": False, "instances": []}
    assert concept_text(concept, NOW) == (
        "name: x\ntype: local_dir\nis_cluster_default: false\ninstances: <none>\n"
    )


# --- YAML projection -------------------------------------------------------


def _concept(*instances: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "default",
        "type": "local_dir",
        "is_cluster_default": True,
        "instances": list(instances),
    }


def test_manifest_flat_instance():
    assert pool_manifests(make_pool(images=[IMAGE])) == [
        {
            "apiVersion": "otherix/v1",
            "kind": "StoragePool",
            "metadata": {"name": "default"},
            "spec": {"type": "local_dir", "path": PATH, "node": "node-a"},
        }
    ]


def test_manifest_concept_shared_path_is_one_doc_with_node_list():
    docs = pool_manifests(_concept(make_pool(), make_pool(id=ID_B, node="node-b")))
    text = render_yaml_stream(docs)
    assert text == (
        "apiVersion: otherix/v1\n"
        "kind: StoragePool\n"
        "metadata:\n"
        "  name: default\n"
        "spec:\n"
        "  type: local_dir\n"
        f"  path: {PATH}\n"
        "  nodeList:\n"
        "  - node-a\n"
        "  - node-b\n"
    )
    assert "id:" not in text
    assert "is_cluster_default" not in text


def test_manifest_concept_different_paths_is_one_doc_per_instance():
    other = "/var/lib/otherix/pools/other"
    docs = pool_manifests(_concept(make_pool(), make_pool(id=ID_B, node="node-b", path=other)))
    assert [d["spec"] for d in docs] == [
        {"type": "local_dir", "path": PATH, "node": "node-a"},
        {"type": "local_dir", "path": other, "node": "node-b"},
    ]
    text = render_yaml_stream(docs)
    assert [d["kind"] for d in yaml.safe_load_all(text)] == ["StoragePool", "StoragePool"]
    for banned in ("id:", "is_cluster_default", "created_at", "reconciliation", "config", "status"):
        assert banned not in text


def test_manifest_concept_without_instances_is_an_error():
    with pytest.raises(ValueError) as info:
        pool_manifests(
            {"name": "x", "type": "local_dir", "is_cluster_default": False, "instances": []}
        )
    assert str(info.value) == 'manifest: pool concept "x" has no instances to project'


def test_manifest_skips_orphaned_instances():
    docs = pool_manifests(
        _concept(make_pool(node="", node_status=None), make_pool(id=ID_B, node="node-b"))
    )
    assert docs[0]["spec"]["nodeList"] == ["node-b"]
    with pytest.raises(ValueError, match="has no instances to project"):
        pool_manifests(_concept(make_pool(node="", node_status=None)))
    with pytest.raises(ValueError, match="orphaned"):
        pool_manifests(make_pool(node="", node_status=None))


def test_manifest_rejects_unknown_shape():
    with pytest.raises(ValueError, match="manifest:"):
        pool_manifests({"name": "x"})


def test_list_manifests_one_per_row_skipping_orphans():
    rows = [make_pool(), make_pool(id=ID_B, node="node-b"), make_pool(node="")]
    assert [d["spec"]["node"] for d in list_manifests(rows)] == ["node-a", "node-b"]


# --- delete messages, default pool -----------------------------------------


def test_blocked_delete_text_with_vms():
    assert blocked_delete_text("pool-dev", {"vm_disks": 3}, ["web-1", "db-1"]) == (
        "cannot delete pool pool-dev — blocked by:\n"
        "  - vm_disks: 3\n"
        "\n"
        "VMs with a disk on this pool:\n"
        "  - web-1\n"
        "  - db-1\n"
        "\n"
        "clean up the listed dependents before retrying delete.\n"
    )


@pytest.mark.parametrize("vms", [None, []])
def test_blocked_delete_text_without_vms(vms):
    assert blocked_delete_text("default on node node-1", {"vm_disks": 2}, vms) == (
        "cannot delete pool default on node node-1 — blocked by:\n"
        "  - vm_disks: 2\n"
        "\n"
        "clean up the listed dependents before retrying delete.\n"
    )


def test_ambiguous_text():
    instances = [make_pool(node="node-1"), make_pool(id=ID_B, node="node-2")]
    assert ambiguous_text("default", instances) == (
        'pool "default" maps to multiple per-node instances — pick one:\n'
        "\n"
        f"  node node-1          {ID_A}\n"
        f"  node node-2          {ID_B}\n"
        "retry by node:\n"
        "  otherix pool delete default --node <node>\n"
        "or by instance UUID:\n"
        "  otherix pool delete <uuid>\n"
    )


def test_default_pool_text():
    assert default_pool_text("default") == "default-pool: default\n"
    assert default_pool_text(None) == (
        "no default pool configured (run 'otherix cluster set-default-pool <name>' to configure)\n"
    )
