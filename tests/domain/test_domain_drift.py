"""``domain.drift``: what is an orphan of ``vms/``, a stray of ``images/`` and
``scratch/``, the bound, and what a purge removes, by table."""

from __future__ import annotations

import pytest

from otherix.domain.drift import (
    GRACE_SECONDS,
    Item,
    Owned,
    Seen,
    bounded,
    image_items,
    purge_plan,
    scratch_items,
    vm_items,
)

NOW = 1_000_000.0
OLD = NOW - GRACE_SECONDS - 1
YOUNG = NOW - 10
A = "5f0c2b6e-0000-4000-8000-00000000000a"
B = "5f0c2b6e-0000-4000-8000-00000000000b"


def f(path: str, size: int = 10, mtime: float = OLD, busy: bool = False) -> Seen:
    return Seen(path, "file", size, mtime, busy)


def d(path: str, mtime: float = OLD) -> Seen:
    return Seen(path, "dir", 0, mtime)


DECLARED_A = Owned(paths=frozenset({f"vms/{A}/disk.qcow2"}), vm_ids=frozenset({A}))


@pytest.mark.parametrize(
    ("seen", "owned", "expected"),
    [
        # the declared disk's directory is owned, whatever else it holds
        ([d(f"vms/{A}"), f(f"vms/{A}/disk.qcow2"), f(f"vms/{A}/disk.raw")], DECLARED_A, []),
        # a VM task under way (no declared disk yet) owns the directory too
        ([d(f"vms/{B}"), f(f"vms/{B}/disk.qcow2")], Owned(vm_ids=frozenset({B})), []),
        # nobody owns B: each disk file is an orphan
        (
            [d(f"vms/{B}"), f(f"vms/{B}/disk.qcow2"), f(f"vms/{B}/disk.raw")],
            DECLARED_A,
            [f"vms/{B}/disk.qcow2", f"vms/{B}/disk.raw"],
        ),
        # a directory without a disk is one orphan; so is a loose file or symlink
        ([d("vms/old"), f("vms/old/notes")], Owned(), ["vms/old"]),
        ([d("vms/empty")], Owned(), ["vms/empty"]),
        ([f("vms/loose"), Seen("vms/link", "symlink", 0, OLD)], Owned(), ["vms/link", "vms/loose"]),
        # with a disk, the directory's other files are orphans of their own
        ([d("vms/x"), f("vms/x/disk.raw"), f("vms/x/junk")], Owned(),
         ["vms/x/disk.raw", "vms/x/junk"]),
        # the owning id is compared in lower case (the directory's canonical form)
        ([d(f"vms/{A.upper()}"), f(f"vms/{A.upper()}/disk.qcow2")],
         Owned(vm_ids=frozenset({A})), []),
    ],
)  # fmt: skip
def test_vm_orphans(seen: list[Seen], owned: Owned, expected: list[str]) -> None:
    assert sorted(i.path for i in vm_items(seen, owned)) == expected
    assert all(i.kind == "orphan" for i in vm_items(seen, owned))


def test_an_orphan_directory_sums_what_it_holds() -> None:
    [item] = vm_items([d("vms/old", mtime=5), f("vms/old/a", 3, 7), f("vms/old/b", 4, 6)], Owned())
    assert (item.type, item.size_bytes, item.mtime) == ("dir", 7, 7)


@pytest.mark.parametrize(
    ("seen", "present", "expected"),
    [
        ([f("images/deb"), f("images/deb.sha256"), f("images/deb.source")], {"deb"}, []),
        ([f("images/deb.sha256")], set(), ["images/deb.sha256"]),  # a sidecar, no image
        ([f("images/deb"), f("images/deb.source")], set(), ["images/deb", "images/deb.source"]),
        ([f("images/deb", mtime=YOUNG)], set(), []),  # a commit may be under way
        ([f("images/.deb.sha256.tmp-0123456789abcdef", mtime=YOUNG)], {"deb"}, []),
        ([f("images/.deb.sha256.tmp-0123456789abcdef")], {"deb"},
         ["images/.deb.sha256.tmp-0123456789abcdef"]),
        ([d("images/sub"), Seen("images/deb", "symlink", 0, OLD)], {"deb"},
         ["images/deb", "images/sub"]),  # a symlink is never an entry's file
    ],
)  # fmt: skip
def test_image_strays(seen: list[Seen], present: set[str], expected: list[str]) -> None:
    assert [i.path for i in image_items(seen, present, now=NOW)] == expected


@pytest.mark.parametrize(
    ("entry", "stray"),
    [
        (f("scratch/a.tmp"), True),
        (f("scratch/a.tmp", mtime=YOUNG), False),  # in the grace period
        (f("scratch/a.tmp", busy=True), False),  # a task of the agent writes it
        (f("scratch/a.tmp", mtime=NOW - GRACE_SECONDS), True),  # the boundary is stray
        (d("scratch/dl"), True),
    ],
)
def test_scratch_strays(entry: Seen, stray: bool) -> None:
    assert bool(scratch_items([entry], now=NOW)) is stray


def test_the_bound_keeps_the_first_paths_and_counts_the_rest() -> None:
    items = [Item("stray", "scratch", f"scratch/{i:03d}", "file", 0, OLD) for i in range(7, 0, -1)]
    kept, more = bounded(items, limit=5)
    assert [i.path for i in kept] == [f"scratch/{i:03d}" for i in range(1, 6)]
    assert more == 2
    assert bounded(items, limit=10)[1] == 0


def test_a_purge_keeps_what_is_owned_or_no_longer_drift() -> None:
    current = [Item("orphan", "vms", f"vms/{B}/disk.raw", "file", 1, OLD)]
    asked = [f"vms/{B}/disk.raw", f"vms/{A}/disk.qcow2", "scratch/gone", f"vms/{B}/disk.raw"]
    go, kept = purge_plan(asked, current, DECLARED_A)
    assert [i.path for i in go] == [f"vms/{B}/disk.raw"]  # once, though asked twice
    assert kept == {f"vms/{A}/disk.qcow2": "owned", "scratch/gone": "not_drift"}


def test_an_orphan_disk_file_knows_its_format() -> None:
    assert Item("orphan", "vms", "vms/x/disk.raw", "file", 1, OLD).disk_format == "raw"
    assert Item("orphan", "vms", "vms/x/notes", "file", 1, OLD).disk_format is None
    assert Item("stray", "scratch", "scratch/disk.raw", "file", 1, OLD).disk_format is None
