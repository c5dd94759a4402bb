"""A pool's ``quarantine/`` (``images.quarantine``) on real files in a temp pool: a move a
killed agent cut short is settled (finished, or an empty directory removed), and the
operator's clear removes exactly what was asked (the kills themselves are
``tests/faults/test_fault_cache_scrub.py``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import KeyedLocks, entries, quarantine

STAMP = "20261204T100000Z"


def _entry(images: Path, name: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    source = {"url": f"http://x/{name}", "sha256": digest, "format": "raw",
              "size_bytes": len(data), "virtual_size_bytes": len(data),
              "imported_at": "2026-12-01T00:00:00Z"}  # fmt: skip
    (images / name).write_bytes(data)
    (images / f"{name}.source").write_text(json.dumps(source))
    (images / f"{name}.sha256").write_text(digest)
    return digest


def _pool(tmp_path: Path) -> tuple[Path, Path, Path]:
    images, base = tmp_path / "images", tmp_path / "quarantine"
    images.mkdir()
    base.mkdir()
    return tmp_path, images, base


def test_a_move_cut_after_the_sidecar_is_finished_once(tmp_path) -> None:
    root, images, base = _pool(tmp_path)
    digest = _entry(images, "bad.img", b"x" * 64)
    qdir = base / f"bad.img.{STAMP}"
    qdir.mkdir()
    os.rename(images / "bad.img.sha256", qdir / "bad.img.sha256")  # the kill came here
    [done] = quarantine.settle(root, locks=KeyedLocks())
    assert (done.image, done.sha256_expected, done.sha256_found) == ("bad.img", digest, None)
    assert os.listdir(images) == []
    assert sorted(os.listdir(qdir)) == ["bad.img", "bad.img.sha256", "bad.img.source",
                                        "scrub.json"]  # fmt: skip
    assert quarantine.settle(root, locks=KeyedLocks()) == []  # settled once
    assert [q.path for q in quarantine.list_quarantine(root)] == [f"quarantine/{qdir.name}"]


def test_an_empty_directory_goes_and_a_newer_entry_stays_in_images(tmp_path) -> None:
    root, images, base = _pool(tmp_path)
    (base / f"empty.img.{STAMP}").mkdir()  # the kill came between mkdir and the sidecar
    _entry(images, "again.img", b"new bytes")
    qdir = base / f"again.img.{STAMP}"
    qdir.mkdir()
    (qdir / "again.img.sha256").write_text("ab" * 32)  # the old, damaged entry's sidecar
    [done] = quarantine.settle(root, locks=KeyedLocks())
    assert done.image == "again.img"
    assert sorted(os.listdir(base)) == [qdir.name]
    assert entries.read_entry(images, "again.img") is not None  # the newer entry untouched
    assert sorted(os.listdir(qdir)) == ["again.img.sha256", "scrub.json"]


def test_clear_removes_the_named_images_or_everything(tmp_path) -> None:
    root, _images, base = _pool(tmp_path)
    for name in ("a.img", "b.img"):
        qdir = base / f"{name}.{STAMP}"
        qdir.mkdir()
        (qdir / name).write_bytes(b"damaged")
        (qdir / quarantine.REPORT_NAME).write_text(json.dumps({"image": name}))
    protected, locks = ProtectedRoots(), KeyedLocks()
    gone = quarantine.clear(root, {"a.img"}, protected=protected, locks=locks)
    assert [q.image for q in gone] == ["a.img"]
    assert [q.image for q in quarantine.list_quarantine(root)] == ["b.img"]
    assert quarantine.clear(root, {"nothere.img"}, protected=protected, locks=locks) == []
    assert [
        q.image for q in quarantine.clear(root, None, protected=protected, locks=KeyedLocks())
    ] == ["b.img"]
    assert os.listdir(base) == []
