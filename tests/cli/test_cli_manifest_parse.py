"""``otherix create|apply|delete -f``: reading and validating manifests (§6).

Every bad input is reported with its document, kind/name and line, and
nothing is sent: the server keeps no pool.
"""

from __future__ import annotations

import textwrap

import pytest
from clihelpers import Cli, failed, get_json, join_node, ok

POOL = """\
apiVersion: otherix/v1
kind: StoragePool
metadata: {name: fast}
spec:
  path: /var/lib/otherix/pools/fast
  node: node-1
"""


def doc(spec: str, kind: str = "StoragePool", name: str = "bad", extra: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(spec).strip(), "  ")
    return (
        f"apiVersion: otherix/v1\nkind: {kind}\nmetadata:\n  name: {name}\n{extra}spec:\n{body}\n"
    )


def pools(api) -> list[str]:
    _, body = get_json(api, "/v1/storage-pools")
    return [p["name"] for p in body["data"]]


BAD = [
    pytest.param(
        doc("path: /p\nnode: node-1\nnodeSelector: {a: b}"),
        'document 2 (StoragePool/bad) line 15: unknown spec field "nodeSelector"',
        id="unknown-spec-key",
    ),
    pytest.param(
        doc("imageURL: https://x/a.img\nvcpu: 2", kind="VM", name="web"),
        'document 2 (VM/web) line 14: unknown spec field "vcpu"',
        id="unknown-vm-key",
    ),
    pytest.param(
        doc("path: /p\nnode: n", extra="  labels: {a: b}\n"),
        'document 2 (StoragePool/bad) line 12: unknown metadata field "labels"',
        id="unknown-metadata-key",
    ),
    pytest.param(
        doc("path: /p\nnode: n") + "status: {}\n",
        'document 2 (StoragePool/bad) line 15: unknown field "status"',
        id="unknown-top-key",
    ),
    pytest.param(
        doc("node: n"),
        "document 2 (StoragePool/bad) line 13: spec.path is required",
        id="no-path",
    ),
    pytest.param(
        doc("path: /p\nnode: a\nnodeList: [b]"),
        "document 2 (StoragePool/bad) line 15: spec.node and spec.nodeList are mutually exclusive",
        id="node-and-nodelist",
    ),
    pytest.param(
        doc("path: /p"),
        "document 2 (StoragePool/bad) line 13: one of spec.node or spec.nodeList is required",
        id="no-node",
    ),
    pytest.param(
        doc("path: /p\nnodeList: [a, ' ']"),
        "document 2 (StoragePool/bad) line 14: spec.nodeList contains an empty node name",
        id="empty-nodelist-entry",
    ),
    pytest.param(
        doc("vcpus: 2", kind="VM", name="web"),
        "document 2 (VM/web) line 13: spec.imageURL is required",
        id="vm-no-image",
    ),
    pytest.param(
        doc("imageURL: u\nvcpus: two", kind="VM", name="web"),
        "document 2 (VM/web) line 14: spec.vcpus must be an integer",
        id="vm-bad-type",
    ),
    pytest.param(
        "apiVersion: otherix/v1\nkind: StoragePool\nmetadata: {name: bad}\nspec: [a, b]\n",
        "document 2 (StoragePool/bad) line 11: spec must be a mapping",
        id="spec-not-mapping",
    ),
    pytest.param(
        doc("path: /p\nnode: n").replace("otherix/v1", "otherix/v2"),
        "document 2 (StoragePool/bad) line 8: apiVersion must be \"otherix/v1\" (got 'otherix/v2')",
        id="wrong-api-version",
    ),
    pytest.param(
        doc("path: /p\nnode: n", kind="storagepool"),
        "document 2 (storagepool/bad) line 9: kind must be one of StoragePool, VM "
        "(got 'storagepool')",
        id="kind-is-case-sensitive",
    ),
    pytest.param(
        "apiVersion: otherix/v1\nkind: StoragePool\nmetadata: {}\nspec: {path: /p, node: n}\n",
        "document 2 (StoragePool/?) line 10: metadata.name is required",
        id="no-name",
    ),
    pytest.param(
        "- just\n- a list\n",
        "document 2 (?/?) line 8: a document must be a mapping",
        id="not-a-mapping",
    ),
]


@pytest.mark.parametrize(("bad", "message"), BAD)
@pytest.mark.parametrize("verb", ["create", "apply", "delete"])
def test_a_bad_document_fails_before_any_request(cli, api, tmp_path, verb, bad, message):
    join_node(api, "node-1")
    path = tmp_path / "m.yaml"
    path.write_text(POOL + "---\n" + bad)
    # The line numbers above count from the start of the stream (POOL is 6 lines + ---).
    assert failed(cli(verb, "-f", str(path), "--force" if verb == "delete" else "--dry-run")) == (
        f"Error: manifest: {message}\n"
    )
    result = cli(verb, "-f", str(path), *(["--force"] if verb == "delete" else []))
    assert failed(result) == f"Error: manifest: {message}\n"
    assert result.stdout == ""
    assert pools(api) == []


def test_yaml_syntax_error_names_the_line(offline_cli):
    result = offline_cli("create", "-f", "-", input=POOL + "---\nkind: [\n")
    assert failed(result) == (
        "Error: manifest: <stdin> line 9: YAML syntax error: "
        "expected the node content, but found '<stream end>'\n"
    )


def test_every_problem_is_reported_and_several_inputs_are_named(offline_cli, tmp_path):
    (tmp_path / "a.yaml").write_text(POOL)
    (tmp_path / "b.yml").write_text(doc("path: /p\nbogus: 1\nnode: x") + "---\n" + POOL)
    result = offline_cli("create", "-f", str(tmp_path / "a.yaml"), "-f", str(tmp_path / "b.yml"))
    b = tmp_path / "b.yml"
    assert failed(result) == (
        f'Error: manifest: {b}: document 1 (StoragePool/bad) line 7: unknown spec field "bogus"\n'
        f"Error: manifest: {b}: document 2: duplicate StoragePool/fast on node-1 "
        f"(also {tmp_path / 'a.yaml'}: document 1)\n"
    )


def test_no_documents_and_unreadable_files(offline_cli, tmp_path):
    assert failed(offline_cli("create", "-f", "-", input="---\n# nothing\n")) == (
        "Error: manifest: no documents found\n"
    )
    missing = tmp_path / "nope.yaml"
    assert failed(offline_cli("create", "-f", str(missing))).startswith(
        f"Error: manifest: cannot read {missing}: "
    )


def test_dry_run_create_asks_the_server_and_expands_node_lists(cli, api, tmp_path):
    join_node(api, "node-1")
    join_node(api, "node-2")
    offline_cli = Cli(url="http://127.0.0.1:1", tokens={"admin": "t"}, home=cli.home)
    (tmp_path / "2-vm.yaml").write_text(
        doc("imageURL: https://images.example/u.img\npool: fast", kind="VM", name="web-1")
    )
    (tmp_path / "1-pool.yml").write_text(
        doc("path: /var/lib/otherix/pools/fast\nnodeList: [' node-1', node-2, node-1]", name="fast")
    )
    (tmp_path / "notes.txt").write_text("ignored")
    # The VM document comes first on the command line; StoragePool still goes first.
    result = offline_cli(
        "create", "-f", str(tmp_path / "2-vm.yaml"), "-f", str(tmp_path), "--dry-run"
    )
    assert result.exit_code == 1  # the directory repeats 2-vm.yaml: a duplicate VM
    assert "duplicate VM/web-1" in result.stderr
    # Each object is judged by the server against what exists now: the VM's pool
    # is not created by a dry run, so the VM would wait for it.
    assert ok(cli("create", "-f", str(tmp_path), "--dry-run")) == (
        "would create StoragePool/fast on node-1\n"
        "would create StoragePool/fast on node-2\n"
        "would create VM/web-1 (it would stay pending: pool_not_found: "
        'pool "fast" not found in cluster)\n'
    )
    assert get_json(api, "/v1/storage-pools/fast")[0] == 404
    assert get_json(api, "/v1/vms/web-1")[0] == 404
    # delete --dry-run only lists; it needs no server.
    assert ok(offline_cli("delete", "-f", str(tmp_path), "--dry-run")) == (
        "would delete VM/web-1\n"
        "would delete StoragePool/fast on node-2\n"
        "would delete StoragePool/fast on node-1\n"
    )


def test_aliases_are_resolved(offline_cli):
    stream = (
        "apiVersion: otherix/v1\nkind: StoragePool\nmetadata: {name: a}\n"
        "spec: {path: /var/lib/otherix/pools/x, nodeList: [&n node-1, node-2, *n]}\n"
    )
    assert ok(offline_cli("delete", "-f", "-", "--dry-run", input=stream)) == (
        "would delete StoragePool/a on node-2\nwould delete StoragePool/a on node-1\n"
    )
