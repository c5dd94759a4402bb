"""A cache scrub's effect on a concurrent reader in the same pool (issue 16), with the
baseline (the reader alone) from the same run.

The pool is a loop-mounted ext4 (root with ``mkfs.ext4``; else ``/dev/shm``, else the
temp dir), holding a "VM disk" the reader streams and cache entries (random bytes, a
sidecar, a ``.source``) for the scrub. Before each run the files' pages are dropped
(``posix_fadvise(DONTNEED)``, on the loop file's too) so both read the disk, not the
page cache. Measured:

- the reader alone: sequential 1 MiB reads of the disk file for ``--seconds``
  (the baseline);
- the same reader while the agent's scrub (``images.scrub.scrub``, the real code, in a
  thread) runs at the default ``config.scrub.max_bytes_per_second``
  (``domain.scrub.DEFAULT_MAX_BYTES_PER_SECOND``, 64 MiB/s), started first so the
  reader's whole run overlaps it;
- the scrub's achieved rate against its limit, and the same scrub unthrottled (how fast
  it could hash here, for scale).

Numbers are printed, never asserted (the issue sets no target). ``--quick``: a 128 MiB
disk, 384 MiB of cache entries, 3 s reads (about 15 s in all). Writes
``bench/results/scrub_reader.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import headline, machine, table
from otherix.agent.images import KeyedLocks
from otherix.agent.images import scrub as scrubbing
from otherix.domain.scrub import DEFAULT_MAX_BYTES_PER_SECOND

MiB = 1 << 20


def _random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(16 * MiB, left))
            digest.update(block)
            fh.write(block)
            left -= len(block)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


def _entry(images: Path, name: str, size: int) -> None:
    digest = _random_file(images / name, size)
    source = {"url": f"http://bench.invalid/{name}", "aliases": [], "sha256": digest,
              "format": "raw", "size_bytes": size, "virtual_size_bytes": size,
              "imported_at": "2026-12-01T00:00:00Z"}  # fmt: skip
    (images / f"{name}.source").write_text(json.dumps(source))
    (images / f"{name}.sha256").write_text(digest)


def _drop(paths: list[Path]) -> None:
    os.sync()
    for path in paths:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


@contextlib.contextmanager
def _pool_fs(work: Path, size: int) -> Iterator[tuple[Path, str, list[Path]]]:
    """(pool root, what it is, files whose pages to drop besides the pool's own)."""
    if os.geteuid() == 0 and shutil.which("mkfs.ext4"):
        img, mnt = work / "ext4.img", work / "ext4"
        with open(img, "wb") as fh:
            fh.truncate(size + 256 * MiB)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
        mnt.mkdir()
        done = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=False,
                              capture_output=True)  # fmt: skip
        if done.returncode == 0:
            try:
                yield mnt, "ext4 on a loop device", [img]
            finally:
                subprocess.run(["umount", str(mnt)], check=False)
            return
    shm = Path("/dev/shm")
    if shm.is_dir() and shutil.disk_usage(shm).free > size + 256 * MiB:
        root = Path(tempfile.mkdtemp(dir=shm, prefix="otherix-bench-"))
        try:
            yield root, "tmpfs (/dev/shm)", []
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return
    yield work, "the temp dir's filesystem", []


def _read_for(path: Path, seconds: float, drop: list[Path]) -> float:
    """Stream ``path`` (again and again) for ``seconds``; MiB/s read."""
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        _drop([path, *drop])
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(MiB):
                done += len(chunk)
                if time.perf_counter() - start >= seconds:
                    break
    return done / MiB / (time.perf_counter() - start)


def _scrub(root: Path, rate: int | None) -> tuple[float, scrubbing.ScrubResult]:
    t = time.perf_counter()
    result = scrubbing.scrub(root, locks=KeyedLocks(), max_bytes_per_second=rate)
    return time.perf_counter() - t, result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes, about 15 s")
    ap.add_argument("--seconds", type=float, default=None, help="each reader run (3 / 10)")
    ap.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = ap.parse_args(argv)
    disk_size = (128 if args.quick else 1024) * MiB
    entry_size, entries_n = (192 * MiB, 2) if args.quick else (512 * MiB, 4)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    limit = DEFAULT_MAX_BYTES_PER_SECOND
    with (
        tempfile.TemporaryDirectory(dir=args.dir) as tmp,
        _pool_fs(Path(tmp), disk_size + entry_size * entries_n) as (root, where, extra),
    ):
        images, vms = root / "images", root / "vms" / "bench-vm"
        images.mkdir()
        vms.mkdir(parents=True)
        disk = vms / "disk.raw"
        _random_file(disk, disk_size)
        for n in range(entries_n):
            _entry(images, f"entry-{n}.img", entry_size)
        everything = [disk, *(images / f"entry-{n}.img" for n in range(entries_n)), *extra]

        _drop(everything)
        alone = _read_for(disk, seconds, extra)

        _drop(everything)
        box: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: box.update(out=_scrub(root, limit)))
        worker.start()
        time.sleep(0.2)  # the scrub is under way before the reader starts
        beside = _read_for(disk, seconds, extra)
        scrub_running_after = worker.is_alive()
        worker.join()
        elapsed, result = box["out"]
        achieved = result.bytes / MiB / elapsed

        _drop(everything)
        free_elapsed, free_result = _scrub(root, None)
        unthrottled = free_result.bytes / MiB / free_elapsed
    rows = [
        {"what": "reader alone (baseline)", "MiB_s": round(alone, 1),
         "note": f"sequential 1 MiB reads of a {disk_size // MiB} MiB disk file, {seconds:g} s"},
        {"what": "reader with a scrub at the default rate", "MiB_s": round(beside, 1),
         "note": f"{beside / alone:.2f}x alone"
         + ("" if scrub_running_after else " (the scrub ended before the reader)")},
        {"what": "scrub, default limit", "MiB_s": round(achieved, 1),
         "note": f"limit {limit // MiB} MiB/s; {result.bytes // MiB} MiB in {elapsed:.1f} s"},
        {"what": "scrub, unthrottled (for scale)", "MiB_s": round(unthrottled, 1),
         "note": f"{free_result.bytes // MiB} MiB in {free_elapsed:.1f} s"},
    ]  # fmt: skip
    heads = [
        headline(
            f"reader beside a scrub at {limit // MiB} MiB/s ({where})",
            f"{beside:.0f} MiB/s = {beside / alone:.2f}x alone",
            target="- (issue sets none)",
            baseline=f"reader alone {alone:.0f} MiB/s",
        ),
        headline(
            "scrub's achieved rate vs its limit",
            f"{achieved:.1f} MiB/s of {limit // MiB} MiB/s",
            target=f"<= {limit // MiB} MiB/s (the limit)",
            baseline=f"unthrottled {unthrottled:.0f} MiB/s",
            met=achieved <= limit / MiB * 1.05,
        ),
    ]
    out = {
        "machine": machine(),
        "headline": heads,
        "pool": where,
        "rows": rows,
        "reader_alone_mib_s": alone,
        "reader_with_scrub_mib_s": beside,
        "scrub_mib_s": achieved,
        "scrub_limit_mib_s": limit / MiB,
        "scrub_unthrottled_mib_s": unthrottled,
    }
    print(f"# scrub beside a reader ({out['machine']})\n")
    print(f"pool on {where}; page cache dropped before each run\n")
    print(table(rows))
    return out


if __name__ == "__main__":
    result = main()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/scrub_reader.json").write_text(json.dumps(result, indent=2, default=str))
