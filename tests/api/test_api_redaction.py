"""``services.redaction``: what each role sees of host layout (table tests, no I/O)."""

from __future__ import annotations

import pytest

from otherix.api.deps import Principal
from otherix.api.services.redaction import HOST_PATH, redact, redact_text, shows_host_layout
from otherix.rbac import Role

P = "/var/lib/otherix/pools/fast/vms/0b5c/disk.qcow2"


def principal(role: Role) -> Principal:
    return Principal("u", str(role), role, "jwt")


@pytest.mark.parametrize(
    ("role", "full"),
    [(Role.ADMIN, True), (Role.OPERATOR, True), (Role.DEVELOPER, False), (Role.VIEWER, False)],
)
def test_only_the_full_node_view_sees_host_layout(role, full):
    value = {"file_path": P, "error": {"message": f"cannot open '{P}'"}}
    assert shows_host_layout(principal(role)) is full
    assert (redact(principal(role), value) == value) is full


@pytest.mark.parametrize(
    ("text", "seen"),
    [
        (
            f"[Errno 28] No space left on device: '{P}'",
            f"[Errno 28] No space left on device: '{HOST_PATH}'",
        ),
        (f"pool {P} has 3 bytes free", f"pool {HOST_PATH} has 3 bytes free"),
        (f'"{P}" and ({P})', f'"{HOST_PATH}" and ({HOST_PATH})'),
        (
            "https://images.example.test/a/b.img served 404",
            "https://images.example.test/a/b.img served 404",
        ),
        ("URL 'http://h:8080/x.qcow2' has no host", "URL 'http://h:8080/x.qcow2' has no host"),
        ("attempts 1/25, input/output error", "attempts 1/25, input/output error"),
        ("a / b", "a / b"),
        (
            "qemu-img: Could not open './x': No such file",
            "qemu-img: Could not open './x': No such file",
        ),
        ("", ""),
    ],
)
def test_paths_in_text(text, seen):
    assert redact_text(text) == seen


def test_nested_values_keep_their_shape():
    dev = principal(Role.DEVELOPER)
    value = {
        "file_path": P,
        "vm_id": "0b5c",
        "sizes": [1, 2],
        "details": {"file_path": P, "pool": "fast", "paths": [P, "ok"]},
        "ok": True,
        "n": None,
    }
    assert redact(dev, value) == {
        "file_path": None,
        "vm_id": "0b5c",
        "sizes": [1, 2],
        "details": {"file_path": None, "pool": "fast", "paths": [HOST_PATH, "ok"]},
        "ok": True,
        "n": None,
    }
    assert redact(dev, None) is None
    assert value["file_path"] == P  # the input is not changed
