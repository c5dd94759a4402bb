"""Tables for otherix.agent.poolplan: the identity decision, the device rule and the
choice of the "later" pool among overlapping roots (pure: no disk, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from otherix.agent.poolplan import (
    Device,
    Expect,
    Marker,
    Proceed,
    Refuse,
    Root,
    Seen,
    Unreadable,
    decide_identity,
    later_overlaps,
    same_device,
)

POOL, CLUSTER, MARK = "pool-1", "cluster-1", "mark-1"
DEV = Device(st_dev=0x0801, fsid=0xABC)


def expect(mode: str = "verify", marker_id: str = MARK) -> Expect:
    return Expect(mode, "fast", "/var/lib/otherix/pools/fast", POOL, CLUSTER, marker_id)  # type: ignore[arg-type]


def marker(
    pool: str = POOL, cluster: str = CLUSTER, mark: str = MARK, device: Device = DEV
) -> Marker:
    return Marker(
        pool,
        "fast" if pool == POOL else "other",
        cluster,
        mark,
        "2027-01-01T00:00:00Z",
        "/p",
        device,
    )


def seen(
    root: str = "dir", m: object = None, device: Device | None = DEV, layout: bool = True
) -> Seen:
    return Seen(root=root, marker=m, device=device if root == "dir" else None, layout=layout)  # type: ignore[arg-type]


GO = Proceed(create_root=False, write_marker=False)
CREATE = Proceed(create_root=True, write_marker=True)
STAMP = Proceed(create_root=False, write_marker=True)
RENUMBERED = Device(st_dev=0x0811, fsid=0xABC)  # other block device number, same filesystem
COPY = Device(st_dev=0x0811, fsid=0xDEF)  # another filesystem with a copy of the marker

IDENTITY_CASES = [
    # known pool: everything must be there
    pytest.param(expect(), seen(m=marker()), GO, id="verify-all-good"),
    pytest.param(expect(), seen("missing"), "pool_missing", id="verify-root-missing"),
    pytest.param(expect(), seen("other"), "pool_missing", id="verify-root-not-a-dir"),
    pytest.param(expect(), seen(m=None), "pool_identity_mismatch", id="verify-marker-missing"),
    pytest.param(
        expect(), seen(m=Unreadable("not JSON")), "pool_identity_mismatch", id="verify-unreadable"
    ),
    pytest.param(
        expect(), seen(m=marker(pool="pool-2")), "pool_identity_mismatch", id="verify-other-pool"
    ),
    pytest.param(
        expect(), seen(m=marker(cluster="c-2")), "pool_identity_mismatch", id="verify-other-cluster"
    ),
    pytest.param(
        expect(), seen(m=marker(mark="old")), "pool_identity_mismatch", id="verify-earlier-marker"
    ),
    pytest.param(expect(), seen(m=marker(), device=COPY), "pool_device_changed", id="verify-copy"),
    pytest.param(expect(), seen(m=marker(), device=RENUMBERED), GO, id="verify-renumbered-ok"),
    # first time: create what is missing, never overwrite what is foreign
    pytest.param(expect("create"), seen("missing"), CREATE, id="create-root-missing"),
    pytest.param(expect("create"), seen(m=None, layout=False), STAMP, id="create-empty-dir"),
    pytest.param(expect("create"), seen(m=marker()), GO, id="create-own-marker-kept"),
    pytest.param(expect("create"), seen(m=marker(mark="old")), STAMP, id="create-after-reinit"),
    pytest.param(
        expect("create"),
        seen(m=marker(pool="pool-2")),
        "pool_identity_mismatch",
        id="create-foreign",
    ),
    pytest.param(
        expect("create"),
        seen(m=marker(cluster="c-2")),
        "pool_identity_mismatch",
        id="create-other-cluster",
    ),
    pytest.param(
        expect("create"), seen(m=Unreadable("x")), "pool_identity_mismatch", id="create-unreadable"
    ),
    pytest.param(expect("create"), seen("other"), "pool_unusable", id="create-file-at-root"),
    pytest.param(
        expect("create"), seen(m=marker(), device=COPY), "pool_device_changed", id="create-own-copy"
    ),
    # upgrade: a directory from before markers is adopted once, an empty one never
    pytest.param(expect("adopt"), seen(m=None, layout=True), STAMP, id="adopt-with-layout"),
    pytest.param(
        expect("adopt"),
        seen(m=None, layout=False),
        "pool_identity_mismatch",
        id="adopt-empty-mount",
    ),
    pytest.param(expect("adopt"), seen("missing"), "pool_missing", id="adopt-root-missing"),
    pytest.param(
        expect("adopt"), seen(m=marker(pool="pool-2")), "pool_identity_mismatch", id="adopt-foreign"
    ),
    pytest.param(expect("adopt"), seen(m=marker()), GO, id="adopt-already-stamped"),
    pytest.param(
        expect("adopt"), seen(m=marker(mark="x")), "pool_identity_mismatch", id="adopt-other-mark"
    ),
    # no pool id (an older control plane): as before markers
    pytest.param(expect("legacy"), seen("missing"), Proceed(True, False), id="legacy-missing"),
    pytest.param(expect("legacy"), seen(m=None), Proceed(True, False), id="legacy-existing"),
]


@pytest.mark.parametrize(("e", "s", "want"), IDENTITY_CASES)
def test_decide_identity(e: Expect, s: Seen, want: Proceed | str) -> None:
    got = decide_identity(e, s)
    if isinstance(want, Proceed):
        assert got == want
    else:
        assert isinstance(got, Refuse), got
        assert got.reason == want
        assert got.message.startswith('pool "fast": '), got.message


@pytest.mark.parametrize(
    ("s", "want"),
    [
        (seen("missing"), "pool_missing"),  # not re-created although identity says create
        (seen(m=None, layout=False), "pool_identity_mismatch"),  # not stamped again
        (seen(m=marker()), GO),
    ],
)
def test_a_marker_this_process_wrote_counts_as_known(s: Seen, want: object) -> None:
    got = decide_identity(expect("create"), s, remembered=MARK)
    assert (got.reason if isinstance(got, Refuse) else got) == want


def test_a_remembered_marker_of_an_earlier_incarnation_does_not_block_reinit() -> None:
    assert decide_identity(expect("create", "new"), seen("missing"), remembered=MARK) == CREATE


def test_messages_say_what_an_operator_needs() -> None:
    missing = decide_identity(expect(), seen(m=None))
    assert isinstance(missing, Refuse)
    assert "marker missing: is the disk mounted?" in missing.message
    foreign = decide_identity(expect(), seen(m=marker(pool="pool-2")))
    assert isinstance(foreign, Refuse)
    assert '"other" (pool-2)' in foreign.message
    other_cluster = decide_identity(expect(), seen(m=marker(cluster="c-2")))
    assert isinstance(other_cluster, Refuse)
    assert "c-2" in other_cluster.message
    assert CLUSTER in other_cluster.message
    moved = decide_identity(expect(), seen(m=marker(), device=COPY))
    assert isinstance(moved, Refuse)
    assert "8:17" in moved.message
    assert "8:1 " in moved.message


@pytest.mark.parametrize(
    ("recorded", "current", "same"),
    [
        (DEV, DEV, True),
        (DEV, RENUMBERED, True),  # st_dev renumbered, f_fsid follows the filesystem
        (DEV, COPY, False),
        # another filesystem attached at the device number the marker recorded
        (DEV, Device(0x0801, 0xDEF), False),
        (Device(0x0801, 0), Device(0x0811, 0), False),  # no fsid: st_dev alone decides
        (Device(0x0801, 0), Device(0x0801, 0xDEF), True),
        (Device(0x0801, 0xABC), Device(0x0801, 0), True),
    ],
)
def test_same_device(recorded: Device, current: Device, same: bool) -> None:
    assert same_device(recorded, current) is same


# --- overlaps ---------------------------------------------------------------------------

T0 = datetime(2027, 1, 1, tzinfo=UTC)


def root(
    name: str,
    real: str,
    minutes: int | None,
    pool_id: str | None = None,
    order: int = 0,
    inode: tuple[int, int] | None = None,
) -> Root:
    created = None if minutes is None else T0 + timedelta(minutes=minutes)
    pid = f"id-{name}" if pool_id is None else pool_id
    return Root(name.lower(), name, pid, created, order, real, inode)


def overlapping(*roots: Root) -> dict[str, str]:
    return {k: v.name for k, v in later_overlaps(list(roots)).items()}


@pytest.mark.parametrize(
    ("roots", "want"),
    [
        pytest.param([root("a", "/p/a", 0), root("b", "/p/b", 1)], {}, id="disjoint"),
        pytest.param([root("a", "/p/a", 0), root("b", "/p/a2", 1)], {}, id="prefix-not-parent"),
        pytest.param([root("a", "/p/a", 0), root("b", "/p/a", 1)], {"b": "a"}, id="same-path"),
        pytest.param(
            [root("b", "/p/a", 1, order=0), root("a", "/p/a", 0, order=1)],
            {"b": "a"},
            id="later-by-created-at-not-declared-order",
        ),
        pytest.param([root("a", "/p/a", 0), root("b", "/p/a/vms/x", 1)], {"b": "a"}, id="inside"),
        pytest.param(
            [root("a", "/p/a/scratch/x", 0), root("b", "/p/a", 1)], {"b": "a"}, id="contains"
        ),
        pytest.param(
            [root("a", "/p/a", 0, pool_id="id-2"), root("b", "/p/a", 0, pool_id="id-1")],
            {"a": "b"},
            id="same-time-lower-id-first",
        ),
        pytest.param(
            [root("a", "/p/x", 0), root("b", "/p/x/y", 1), root("c", "/p/x/y/z", 2)],
            {"b": "a", "c": "a"},
            id="chain-names-the-earliest",
        ),
        pytest.param(
            [root("a", "/p/x/in", 0), root("b", "/p/x", 1), root("c", "/p/x/other", 2)],
            {"b": "a", "c": "b"},
            id="an-earlier-failed-pool-still-counts",
        ),
        pytest.param(
            [root("a", "/p/a", 0, inode=(1, 5)), root("b", "/q/b", 1, inode=(1, 5))],
            {"b": "a"},
            id="bind-mount-same-inode",
        ),
        pytest.param(
            [root("a", "/p/a", None, "", order=1), root("b", "/p/a", None, "", order=0)],
            {"a": "b"},
            id="no-created-at-declared-order",
        ),
    ],
)
def test_later_overlaps(roots: list[Root], want: dict[str, str]) -> None:
    assert overlapping(*roots) == want
