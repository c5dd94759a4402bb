"""Block devices for the durability fault tests: a small ext4 filesystem on a loop
device, and an image of what that device really holds right now.

- ``ext4_on_loop``: a file, ``mkfs.ext4``, ``losetup``, ``mount``; undone on exit.
- ``device_image``: ``dd iflag=direct`` of the loop device. ``O_DIRECT`` reads
  go to the device, past every page cache: what they return is what the
  filesystem has written to the device, not what it still holds in memory
  (an unsynced commit lives in the page cache of the file it was written to).
  That is what a power cut leaves behind.
- ``mounted_image``: the image on a second loop device (ext4 replays its
  journal on mount, as after a real crash).
- ``syncfs``: flush one filesystem (``sync -f``), never the whole machine.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    dev = run("losetup", "--find", "--show", str(image))
    try:
        yield dev
    finally:
        run("losetup", "--detach", dev)


@contextlib.contextmanager
def mounted(dev: str, where: Path) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    run("mount", "-t", "ext4", dev, str(where))
    try:
        yield where
    finally:
        for _ in range(50):  # a process just killed may still hold a file for a moment
            if subprocess.run(["umount", str(where)], check=False).returncode == 0:
                break
            subprocess.run(["sleep", "0.1"], check=False)
        else:
            run("umount", "--lazy", str(where))


@contextlib.contextmanager
def ext4_on_loop(tmp: Path, name: str, size_mib: int = 96) -> Iterator[tuple[str, Path]]:
    """(device, mount point) of a fresh ext4 filesystem of ``size_mib``."""
    backing = tmp / f"{name}.img"
    with open(backing, "wb") as fh:
        fh.truncate(size_mib << 20)
    run("mkfs.ext4", "-q", "-F", str(backing))
    with loop_device(backing) as dev, mounted(dev, tmp / name) as where:
        yield dev, where


def syncfs(path: Path) -> None:
    run("sync", "--file-system", str(path))


def device_image(dev: str, out: Path) -> None:
    run("dd", f"if={dev}", f"of={out}", "bs=1M", "iflag=direct", "status=none")


@contextlib.contextmanager
def mounted_image(image: Path, where: Path) -> Iterator[Path]:
    with loop_device(image) as dev, mounted(dev, where) as path:
        yield path
