"""The eviction journal (``images.evictlog``) and how ``images.evict`` settles what a killed
agent left pending: on real files in a temp pool (the kills themselves are
``tests/faults/test_fault_cache_evict.py``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from otherix.agent.images import KeyedLocks, evict, evictlog
from otherix.domain.cache import CachePolicy


def _entry(images: Path, name: str, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (images / name).write_bytes(data)
    (images / f"{name}.source").write_text(
        json.dumps(
            {
                "url": f"http://x/{name}",
                "sha256": digest,
                "format": "raw",
                "size_bytes": len(data),
                "virtual_size_bytes": len(data),
                "imported_at": "2026-12-01T00:00:00Z",
            }
        )
    )
    (images / f"{name}.sha256").write_text(digest)
    old = 1_700_000_000
    os.utime(images / f"{name}.sha256", (old, old))
    return {
        "image": name,
        "sha256": digest,
        "size_bytes": len(data),
        "reason": "prune",
        "last_used_at": "2023-11-14T22:13:20Z",
        "evicted_at": "2026-12-04T10:00:00Z",
    }


def _pool(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    return tmp_path, images


def test_an_eviction_cut_short_is_finished_and_one_never_begun_is_dropped(tmp_path) -> None:
    root, images = _pool(tmp_path)
    begun = _entry(images, "begun.img", b"a" * 100)
    untouched = _entry(images, "untouched.img", b"b" * 100)
    (images / "begun.img.sha256").unlink()  # the kill came after the sidecar went
    journal = evictlog.Journal(root)
    journal.begin(begun)
    journal.begin(untouched)  # the kill came before anything of it was removed
    settled = evict.settle(root, locks=KeyedLocks())
    assert [e.image for e in settled] == ["begun.img"]
    assert sorted(os.listdir(images)) == ["untouched.img", "untouched.img.sha256",
                                          "untouched.img.source"]  # fmt: skip
    pending, done = journal.read()
    assert pending == []
    assert done == [begun]
    assert [e.to_wire() for e in evict.history(root)] == [begun]


def test_every_eviction_is_journalled_done_and_the_journal_keeps_the_newest(tmp_path) -> None:
    root, images = _pool(tmp_path)
    for n in range(evictlog.KEEP + 3):
        _entry(images, f"e{n:02d}.img", bytes([n]) * 10)
    gone = evict.evict(
        root, CachePolicy(min_age_s=0), in_use=(), capacity=0, available=0,
        locks=KeyedLocks(), prune=True,
    )  # fmt: skip
    assert len(gone) == evictlog.KEEP + 3
    assert os.listdir(images) == []
    pending, done = evictlog.Journal(root).read()
    assert pending == []
    assert [d["image"] for d in done] == [e.image for e in gone][-evictlog.KEEP :]


def test_an_unreadable_journal_settles_nothing_and_removes_nothing(tmp_path) -> None:
    root, images = _pool(tmp_path)
    _entry(images, "keep.img", b"k" * 10)
    (root / evictlog.JOURNAL_NAME).write_text("{not json")
    assert evict.settle(root, locks=KeyedLocks()) == []
    assert evict.history(root) == []
    assert "keep.img.sha256" in os.listdir(images)


def test_a_journal_that_cannot_be_written_does_not_stop_an_eviction(tmp_path) -> None:
    """A full pool cannot take the journal's write; freeing its space comes first."""
    root, images = _pool(tmp_path)
    _entry(images, "go.img", b"g" * 10)
    (root / evictlog.JOURNAL_NAME).mkdir()  # every write of the journal fails
    gone = evict.evict(
        root, CachePolicy(min_age_s=0), in_use=(), capacity=0, available=0,
        locks=KeyedLocks(), prune=True,
    )  # fmt: skip
    assert [e.image for e in gone] == ["go.img"]
    assert os.listdir(images) == []
