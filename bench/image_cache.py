"""Image cache and VM disk numbers (``otherix.agent.images``), with baselines
from the same run.

A file of random bytes (1 GiB; 256 MiB with ``--quick``) is made once in a
temp dir and served by ``python -m http.server`` in a subprocess. Measured:

- cache fill (download + in-stream sha256 + fsync + ``qemu-img info`` +
  commit) against ``curl -s -o`` to the same filesystem (plain, and followed
  by an fsync, which the cache does and curl does not), and ``sha256sum``;
  target: fill >= 0.9x curl;
- cache-hit cost of an unpinned image at 64 MiB and at full size (must not
  grow with size: no re-hash);
- downloads caused by 20 concurrent ``ensure_image`` calls (counted in the
  server's request log; target exactly 1);
- disk clone: reflink (when the filesystem supports it; ``--xfs`` adds a
  loop-mounted XFS, root only) and the copy path (``allow_reflink=False``:
  ``copy_file_range``, which XFS itself may serve by sharing extents),
  against ``cp``.

Each timing is the median of ``--repeat`` runs (default 3). Writes
``bench/results/image_cache.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port, headline, machine, table
from otherix.agent.fs import ProtectedRoots
from otherix.agent.images import (
    ImageCache,
    ImageCacheSettings,
    KeyedLocks,
    ScratchArea,
    materialise_disk,
)

MiB = 1 << 20


def _median_time(fn: Callable[[], object], repeat: int, before: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _make_file(path: Path, size: int) -> None:
    block = 16 * MiB
    with open(path, "wb") as f:
        for _ in range(size // block):
            f.write(os.urandom(block))
        f.write(os.urandom(size % block))


@contextmanager
def _server(directory: Path, log: Path) -> Iterator[str]:
    port = free_port()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.head(f"{url}/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _gets(log: Path, name: str) -> int:
    return len(re.findall(rf'"GET /{re.escape(name)} HTTP', log.read_text(errors="replace")))


def _fresh_pool(root: Path) -> Path:
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("images", "scratch", "vms"):
        (root / sub).mkdir(parents=True)
    return root


def _drop_page_cache_of(path: Path) -> None:
    """Flush dirty pages so one run's writeback does not bill the next."""
    subprocess.run(["sync", "-f", str(path)], check=False)


def _mbps(size: int, seconds: float) -> float:
    return round(size / MiB / seconds, 1)


def _clone_rows(
    label: str, pool: Path, image: Path, size: int, repeat: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    vm_ids: list[str] = []

    protected, locks = ProtectedRoots(), KeyedLocks()  # no other pool: nothing protected

    def clone(allow_reflink: bool) -> str:
        vm = str(uuid.uuid4())
        vm_ids.append(vm)
        return materialise_disk(
            pool,
            vm,
            image,
            "raw",
            0,
            allow_reflink=allow_reflink,
            scratch_area=ScratchArea(protected),
            locks=locks,
            protected=protected,
        ).method

    def cleanup() -> None:
        for vm in vm_ids:
            shutil.rmtree(pool / "vms" / vm, ignore_errors=True)
        vm_ids.clear()
        for leftover in pool.glob("cp-*"):
            leftover.unlink()
        _drop_page_cache_of(pool)

    cleanup()
    method = clone(True)
    cleanup()
    if method == "reflink":
        t = _median_time(lambda: clone(True), repeat, cleanup)
        cp_t = _median_time(
            lambda: subprocess.run(
                ["cp", "--reflink=always", str(image), str(pool / "cp-r")], check=True
            ),
            repeat,
            cleanup,
        )
        rows.append(
            {
                "what": f"disk clone, reflink ({label})",
                "seconds": round(t, 4),
                "MB_s": "-",
                "baseline": f"cp --reflink=always {cp_t:.4f} s",
                "target": "-",
            }
        )
    else:
        rows.append(
            {
                "what": f"disk clone, reflink ({label})",
                "seconds": "n/a",
                "MB_s": "-",
                "baseline": "filesystem has no reflink (FICLONE refused); byte copy used",
                "target": "-",
            }
        )
    t = _median_time(lambda: clone(False), repeat, cleanup)
    cp_t = _median_time(
        lambda: subprocess.run(
            ["cp", "--reflink=never", str(image), str(pool / "cp-c")], check=True
        ),
        repeat,
        cleanup,
    )
    cp_sync_t = _median_time(
        lambda: subprocess.run(
            ["sh", "-c", f'cp --reflink=never "{image}" "{pool}/cp-s" && sync "{pool}/cp-s"'],
            check=True,
        ),
        repeat,
        cleanup,
    )
    cleanup()
    rows.append(
        {
            "what": f"disk clone, copy path + fsync ({label})",
            "seconds": round(t, 3),
            "MB_s": _mbps(size, t),
            "baseline": f"cp {_mbps(size, cp_t)} MB/s; cp+sync {_mbps(size, cp_sync_t)} MB/s",
            "target": "-",
        }
    )
    return rows


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def _cache(settings: ImageCacheSettings) -> ImageCache:
    """An image cache with its own lock table and no protected roots (no reconciler here)."""
    return ImageCache(settings, locks=KeyedLocks(), protected=ProtectedRoots())


def _fill_rows(
    where: Path, url: str, settings: ImageCacheSettings, size: int, repeat: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """Cache fill into a pool under ``where`` against curl (with and without fsync) there."""
    cache = _cache(settings)  # one per process, as the agent keeps it
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        pool, out = Path(tmp) / "pool", Path(tmp) / "curl.out"

        def fill() -> None:
            cache.ensure_image(pool, url)

        def reset() -> None:
            _fresh_pool(pool)
            out.unlink(missing_ok=True)
            _drop_page_cache_of(Path(tmp))

        def curl() -> None:
            subprocess.run(["curl", "-s", "-o", str(out), url], check=True)

        def curl_sync() -> None:
            curl()
            fd = os.open(out, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

        # Interleaved, so machine noise hits all three alike.
        fills, curls, syncs, fill_cpu, curl_cpu = [], [], [], [], []
        for _ in range(repeat):
            reset()
            c = _cpu(resource.RUSAGE_SELF)
            fills.append(_median_time(fill, 1, lambda: None))
            fill_cpu.append(_cpu(resource.RUSAGE_SELF) - c)
            reset()
            c = _cpu(resource.RUSAGE_CHILDREN)
            curls.append(_median_time(curl, 1, lambda: None))
            curl_cpu.append(_cpu(resource.RUSAGE_CHILDREN) - c)
            syncs.append(_median_time(curl_sync, 1, reset))
        reset()
    fill_t, curl_t, sync_t = map(statistics.median, (fills, curls, syncs))
    ratios = {"vs_curl": round(curl_t / fill_t, 3), "vs_curl_fsync": round(sync_t / fill_t, 3)}
    row = {
        "what": f"cache fill {size // MiB} MiB on {_fs_type(where)} (sha256 + fsync incl.)",
        "seconds": round(fill_t, 3),
        "MB_s": _mbps(size, fill_t),
        "baseline": (
            f"curl -o {_mbps(size, curl_t)} MB/s ({ratios['vs_curl']:.2f}x); "
            f"curl+fsync {_mbps(size, sync_t)} MB/s ({ratios['vs_curl_fsync']:.2f}x); "
            f"CPU s: fill {statistics.median(fill_cpu):.2f}, curl {statistics.median(curl_cpu):.2f}"
        ),
        "target": ">= 0.9x curl",
    }
    return row, ratios


@contextmanager
def _xfs(work: Path, size: int) -> Iterator[Path | None]:
    if os.geteuid() != 0 or shutil.which("mkfs.xfs") is None:
        print("(--xfs needs root and mkfs.xfs; skipped)")
        yield None
        return
    img, mnt = work / "xfs.img", work / "xfs"
    with open(img, "wb") as f:
        f.truncate(max(3 * size + 512 * MiB, 512 * MiB))
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(img)], check=True)
    mnt.mkdir()
    subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _fs_type(path: Path) -> str:
    for cmd in (["findmnt", "-no", "FSTYPE", "--target"], ["stat", "-f", "-c", "%T"]):
        try:
            out = subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=False)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    return "?"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="256 MiB instead of 1 GiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--xfs", action="store_true", help="also clone on a loop XFS (root)")
    ap.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = ap.parse_args(argv)
    size = (256 if args.quick else 1024) * MiB
    settings = ImageCacheSettings(allowed_networks=("127.0.0.1/32",), space_margin_bytes=0)
    rows: list[dict[str, Any]] = []
    heads: list[dict[str, str]] = []
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        served = work / "served"
        served.mkdir()
        big = f"image-{size // MiB}M.raw"
        _make_file(served / big, size)
        _make_file(served / "image-64M.raw", 64 * MiB)
        os.sync()  # the served files' own writeback must not bill the first runs
        log = work / "server.log"
        fs_type = _fs_type(work)
        extra["filesystem"] = fs_type
        with _server(served, log) as base:
            url = f"{base}/{big}"
            subprocess.run(["curl", "-s", "-o", "/dev/null", url], check=True)  # warm-up

            # cache fill vs curl vs sha256sum, on the work dir's disk and on tmpfs
            for where in (work, Path("/dev/shm")) if Path("/dev/shm").is_dir() else (work,):
                row, ratios = _fill_rows(where, url, settings, size, args.repeat)
                rows.append(row)
                extra[f"fill_{_fs_type(where)}"] = ratios
                heads.append(
                    headline(
                        f"image cache fill, {size // MiB} MiB on {_fs_type(where)} "
                        "(download + sha256 + fsync + commit)",
                        f"{row['MB_s']} MB/s = {ratios['vs_curl']:.2f}x curl",
                        target=">= 0.9x curl -o",
                        baseline=row["baseline"],
                        met=ratios["vs_curl"] >= 0.9,
                    )
                )
            sha_t = _median_time(
                lambda: subprocess.run(
                    ["sha256sum", str(served / big)], check=True, capture_output=True
                ),
                args.repeat,
                lambda: None,
            )
            rows.append(
                {
                    "what": f"baseline: sha256sum of the {size // MiB} MiB file (page cache)",
                    "seconds": round(sha_t, 3),
                    "MB_s": _mbps(size, sha_t),
                    "baseline": "-",
                    "target": "-",
                }
            )
            pool = work / "pool"

            def reset() -> None:
                _fresh_pool(pool)
                _drop_page_cache_of(work)

            # cache hit, unpinned, small vs big
            reset()
            cache = _cache(settings)
            cache.ensure_image(pool, url)
            cache.ensure_image(pool, f"{base}/image-64M.raw")
            hits: dict[str, float] = {}
            for name in ("image-64M.raw", big):
                n = 200
                t = time.perf_counter()
                for _ in range(n):
                    img = cache.ensure_image(pool, f"{base}/{name}")
                    assert not img.downloaded
                per = (time.perf_counter() - t) / n
                hits[name] = per
                rows.append(
                    {
                        "what": f"cache hit, unpinned, {name}",
                        "seconds": round(per, 6),
                        "MB_s": "-",
                        "baseline": "-",
                        "target": "flat in image size (no re-hash)",
                    }
                )

            heads.append(
                headline(
                    f"cache hit, unpinned, 64 MiB vs {size // MiB} MiB image",
                    f"{hits['image-64M.raw'] * 1000:.2f} ms vs {hits[big] * 1000:.2f} ms",
                    target="flat in image size (big <= 2x small)",
                    baseline=f"sha256sum of the {size // MiB} MiB file {sha_t:.3f} s",
                    met=hits[big] <= 2 * hits["image-64M.raw"],
                )
            )

            # 20 concurrent ensures on an empty pool
            reset()
            gets_before = _gets(log, big)
            cache = _cache(settings)
            results: list[bool] = []
            barrier = threading.Barrier(20)

            def worker() -> None:
                barrier.wait()
                results.append(cache.ensure_image(pool, url).downloaded)

            t = time.perf_counter()
            threads = [threading.Thread(target=worker) for _ in range(20)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
            time.sleep(0.2)  # let the server flush its log line
            downloads = _gets(log, big) - gets_before
            rows.append(
                {
                    "what": "20 concurrent ensure_image (empty cache)",
                    "seconds": round(wall, 3),
                    "MB_s": "-",
                    "baseline": f"{downloads} download(s) at the server, "
                    f"{sum(results)} caller(s) saw downloaded=True",
                    "target": "exactly 1 download",
                }
            )
            extra["concurrent_downloads"] = downloads
            heads.append(
                headline(
                    "single flight: 20 concurrent ensure_image, empty cache",
                    f"{downloads} download(s) at the origin",
                    target="exactly 1",
                    baseline="20 callers",
                    met=downloads == 1,
                )
            )

            # disk clones
            image = pool / "images" / big
            rows += _clone_rows(fs_type, pool, image, size, args.repeat)
            if args.xfs:
                with _xfs(work, size) as mnt:
                    if mnt is not None:
                        xpool = _fresh_pool(mnt / "pool")
                        _cache(settings).ensure_image(xpool, url)
                        rows += _clone_rows(
                            "xfs loop", xpool, xpool / "images" / big, size, args.repeat
                        )
    heads += [
        headline(
            f"disk {row['what'].removeprefix('disk ')}, {size // MiB} MiB",
            f"{row['seconds']} s" + (f" ({row['MB_s']} MB/s)" if row["MB_s"] != "-" else ""),
            target="- (issue sets none)",
            baseline=row["baseline"],
        )
        for row in rows
        if str(row["what"]).startswith("disk clone")
    ]
    result = {
        "machine": machine(),
        "headline": heads,
        "size_bytes": size,
        "repeat": args.repeat,
        **extra,
        "rows": rows,
    }
    print(f"# image cache ({result['machine']})\n")
    print(
        f"{size // MiB} MiB random file from `python -m http.server` on 127.0.0.1; "
        f"pool on {fs_type}; median of {args.repeat}\n"
    )
    print(table(rows))
    return result


if __name__ == "__main__":
    out = main()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/image_cache.json").write_text(json.dumps(out, indent=2, default=str))
