"""``otherix node`` and ``otherix node join-token`` against the real server."""

from __future__ import annotations

import json

import yaml
from clihelpers import failed, get_json, heartbeat, join_node, ok, usage


def test_node_list_get_cordon_uncordon(cli, api):
    a = join_node(api, "node-a")
    join_node(api, "node-b")
    heartbeat(api, a)  # node-a becomes ready, reports amd64 and agent version "t"

    out = ok(cli("node", "list"))
    assert out.splitlines()[0].split() == ["NAME", "STATUS", "ARCH", "VERSION", "AGE"]
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[:4] for r in rows] == [
        ["node-a", "ready", "amd64", "t"],
        ["node-b", "pending", "-", "-"],
    ]

    wide = ok(cli("node", "list", "-o", "wide"))
    assert wide.splitlines()[0].split() == [
        "NAME", "STATUS", "ARCH", "VERSION", "CORDONED", "HEARTBEAT", "AGE"
    ]  # fmt: skip
    rows = [line.split() for line in wide.splitlines()[1:]]
    assert [r[:5] for r in rows] == [
        ["node-a", "ready", "amd64", "t", "no"],
        ["node-b", "pending", "-", "-", "no"],
    ]
    assert rows[1][5] == "-"  # never heartbeated

    ids = ok(cli("node", "list", "--show-ids", "--status", "ready"))
    assert ids.splitlines()[1].split()[:2] == [a.id, "node-a"]
    assert len(ids.splitlines()) == 2

    text = ok(cli("node", "get", "node-a"))
    assert f"id: {a.id}\nname: node-a\nstatus: ready\ncordoned: false\n" in text
    assert json.loads(ok(cli("node", "get", "node-a", "-o", "json")))["name"] == "node-a"
    assert yaml.safe_load(ok(cli("node", "get", "node-a", "-o", "yaml")))["status"] == "ready"

    assert ok(cli("node", "cordon", "node-a", role="operator")) == (
        "node node-a cordoned (status cordoned)\n"
    )
    assert get_json(api, "/v1/nodes/node-a")[1]["cordoned"] is True
    assert ok(cli("node", "uncordon", "node-a")) == "node node-a uncordoned (status ready)\n"
    assert get_json(api, "/v1/nodes/node-a")[1]["cordoned"] is False

    err = failed(cli("node", "uncordon", "node-b"))
    assert err == "Error: node is pending; only a ready node can be uncordoned\n"
    err = failed(cli("node", "cordon", "node-a", role="developer"))
    assert err == "Error: permission denied: role developer lacks node:maintenance\n"


def test_node_list_pages_and_renders_json_and_yaml(cli, api):
    join_node(api, "n1")
    join_node(api, "n2")
    out = ok(cli("node", "list", "--limit", "1"))
    lines = out.splitlines()
    assert lines[1].split()[0] == "n1"
    assert lines[2:4] == ["", "More results - next page:"]
    cursor = lines[4].split("--cursor ")[1]
    assert lines[4].endswith(f" node list --limit 1 --cursor {cursor}")
    again = ok(cli("node", "list", "--limit", "1", "--cursor", cursor))
    assert again.splitlines()[1].split()[0] == "n2"
    assert "More results" not in again

    body = json.loads(ok(cli("node", "list", "-o", "json")))
    assert [n["name"] for n in body["data"]] == ["n1", "n2"]
    docs = list(yaml.safe_load_all(ok(cli("node", "list", "-o", "yaml"))))
    assert [d["name"] for d in docs] == ["n1", "n2"]


def test_viewer_sees_the_node_summary(cli, api):
    join_node(api, "node-a")
    out = ok(cli("node", "get", "node-a", role="viewer"))
    assert "cordoned" not in out
    assert out.startswith("id: ")


def test_node_delete_prompts_on_a_tty_and_unknown_node_fails(cli, api):
    join_node(api, "node-a")
    result = cli("node", "delete", "node-a", tty=True, input="no\n")
    assert (
        failed(result) == "delete node node-a? [y/N]: Error: aborted: did not delete node node-a\n"
    )
    assert get_json(api, "/v1/nodes/node-a")[0] == 200
    assert usage(cli("node", "delete", "node-a")).startswith("Error: refusing to delete node")
    assert get_json(api, "/v1/nodes/node-a")[0] == 200
    assert ok(cli("node", "delete", "node-a", "--force")) == "node node-a deleted\n"
    assert get_json(api, "/v1/nodes/node-a")[0] == 404
    assert failed(cli("node", "get", "node-a")) == (
        "Error: node \"node-a\" not found; run 'otherix node list' to see the nodes\n"
    )


def test_join_token_create_json_list_delete(cli, api):
    body = json.loads(
        ok(cli("node", "join-token", "create", "--ttl", "1h", "--max-uses", "3",
               "--description", "rack 4", "-o", "json"))
    )  # fmt: skip
    assert body["token"]
    assert body["max_uses"] == 3
    assert body["uses"] == 0
    assert body["description"] == "rack 4"

    # The token enrols a node, as an agent would use it.
    with api.client(None) as c:
        r = c.post("/v1/nodes/join", json={"join_token": body["token"], "name": "node-z"})
        assert r.status_code == 201

    out = ok(cli("node", "join-token", "list"))
    header, row = out.splitlines()
    assert header.split() == ["ID", "PREFIX", "DESCRIPTION", "USES", "EXPIRES", "AGE"]
    assert row.startswith(f"{body['id']}  {body['prefix']}  rack 4")
    assert " 1/3 " in row

    text = ok(cli("node", "join-token", "create"))
    assert [line.split(":", 1)[0] for line in text.splitlines()] == [
        "id", "expires_at", "max_uses", "token",
    ]  # fmt: skip

    assert usage(cli("node", "join-token", "delete", body["id"])).startswith(
        f"Error: refusing to delete join token {body['id']} without confirmation"
    )
    assert body["id"] in ok(cli("node", "join-token", "list"))
    assert (
        ok(cli("node", "join-token", "delete", body["id"], "--force"))
        == f"join token {body['id']} deleted\n"
    )
    assert body["id"] not in ok(cli("node", "join-token", "list"))
    assert usage(cli("node", "join-token", "create", "--ttl", "tomorrow")).startswith(
        'Error: --ttl: invalid duration "tomorrow"'
    )
    err = failed(cli("node", "join-token", "list", role="operator"))
    assert err == "Error: permission denied: role operator lacks node:manage\n"
