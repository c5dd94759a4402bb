"""``otherix pool cordon|uncordon`` and how a cordoned instance reads in ``pool list``
and ``pool get``."""

from __future__ import annotations

from clihelpers import failed, ok, table
from test_cli_vms_helpers import make_vm, ready_node, ready_pool


def test_cordon_and_uncordon_an_instance(cli, api):
    node = ready_node(api, "node-a")
    pool = ready_pool(api, node, "fast")
    assert ok(cli("pool", "cordon", "fast", "--node", "node-a")) == (
        "pool fast on node node-a cordoned\n"
    )
    rows = {r["NAME"]: r for r in table(ok(cli("pool", "list")))}
    assert rows["fast"]["STATUS"] == "cordoned"
    assert rows["default"]["STATUS"] == "ready"
    got = ok(cli("pool", "get", pool["id"]))
    assert "cordoned: true (placement skips it: 'otherix pool uncordon')\n" in got
    refused = failed(cli("vm", "create", "web-1", "--image-url", "https://i.example/a.img",
                         "--pool", "fast"))  # fmt: skip
    assert refused.startswith('Error: pool "fast" is cordoned')
    assert ok(cli("pool", "uncordon", pool["id"])) == f"pool {pool['id']} uncordoned\n"
    assert "cordoned" not in ok(cli("pool", "get", pool["id"]))
    make_vm(api, "web-2", pool="fast")  # placed again


def test_cordon_of_a_name_on_several_nodes_asks_for_the_node(cli, api):
    for name in ("node-a", "node-b"):
        ready_pool(api, ready_node(api, name), "fast")
    err = failed(cli("pool", "cordon", "fast"))
    assert "node-a" in err
    assert "node-b" in err
    assert "--node" in err
