"""The test guest (``support.guest``): it builds from Debian packages, its cache holds, and
under plain QEMU (TCG) it boots to its marker, counts its boots on its own data partition
and powers off by itself on ACPI ``system_powerdown``. Prints the numbers (build time,
image size, boot-to-marker time, QEMU's RSS); asserts behaviour only."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from qemu.qmp import QMPClient

from support import guest

QCOW2_MAGIC = b"QFI\xfb"
BOOT_TIMEOUT = 60.0  # TCG on two shared cores: 2-3 s when quiet
POWERDOWN_TIMEOUT = 30.0


def test_build_is_cached_and_keyed(test_guest: Path, tmp_path: Path) -> None:
    _, version = guest.kernel_package()
    assert test_guest.name == guest.cache_name(version, Path(guest.__file__).read_bytes())
    assert test_guest.read_bytes()[:4] == QCOW2_MAGIC
    assert guest.read_counter(test_guest) is None  # never booted: the data partition is empty

    # a fresh cache (the unpacked kernel copied over, so no download) builds the same name
    # and drops what an older kernel or builder left there
    cache = tmp_path / "cache"
    shutil.copytree(test_guest.parent / f"kernel-{version}", cache / f"kernel-{version}")
    (cache / "kernel-0.1-1").mkdir()
    (cache / "kernel-0.1-1" / "vmlinuz").write_bytes(b"old")
    (cache / "otherix-guest-0.1-1-0123456789abcdef.qcow2").write_bytes(b"old")
    started = time.monotonic()
    built = guest.build_guest(cache)
    build_seconds = time.monotonic() - started
    assert built == cache / test_guest.name
    kept = sorted(p.name for p in cache.iterdir())
    assert kept == [".lock", f"kernel-{version}", test_guest.name]
    assert built.read_bytes()[:4] == QCOW2_MAGIC
    print(f"guest build: {build_seconds:.2f} s, qcow2 {built.stat().st_size / 1e6:.1f} MB")

    stamp = built.stat().st_mtime_ns
    started = time.monotonic()
    assert guest.build_guest(cache) == built
    assert time.monotonic() - started < 1.0
    assert built.stat().st_mtime_ns == stamp  # found, not rebuilt


def test_cache_name_changes_with_kernel_and_builder() -> None:
    names = {
        guest.cache_name("6.1.192-3", b"builder"),
        guest.cache_name("6.1.192-4", b"builder"),
        guest.cache_name("6.1.192-3", b"builder, changed"),
    }
    assert len(names) == 3
    assert all(name.endswith(".qcow2") for name in names)
    assert "6.1.192-3" in guest.cache_name("6.1.192-3", b"builder")


@pytest.mark.slow
def test_guest_counts_boots_on_its_disk_and_powers_off(test_guest: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    shutil.copyfile(test_guest, disk)
    for boot in (1, 2):
        run = tmp_path / f"boot{boot}"
        run.mkdir()
        serial, qmp = run / "serial.log", run / "qmp.sock"
        with (
            (run / "qemu.out").open("wb") as out,
            subprocess.Popen(
                _qemu(disk, serial, qmp),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            ) as qemu,
        ):
            try:
                started = time.monotonic()
                log = _wait_for_marker(qemu, serial, run / "qemu.out")
                up_seconds = time.monotonic() - started
                rss_mb = _rss_kib(qemu.pid) / 1024
                assert [int(n) for n in guest.MARKER.findall(log)] == [boot]
                assert "OTHERIX-GUEST-ERROR" not in log

                asyncio.run(_qmp(qmp, "system_powerdown"))
                assert qemu.wait(POWERDOWN_TIMEOUT) == 0  # the guest powered itself off
            finally:
                if qemu.poll() is None:
                    qemu.kill()
        print(f"boot {boot}: marker after {up_seconds:.2f} s, QEMU RSS {rss_mb:.0f} MB")
    assert guest.read_counter(disk) == 2
    assert guest.read_counter(test_guest) is None  # the cached image was not the one booted


def _qemu(disk: Path, serial: Path, qmp: Path) -> list[str]:
    """Plain QEMU under TCG: the serial console to a file, QMP on a unix socket."""
    return [
        "qemu-system-x86_64",
        *("-accel", "tcg", "-m", "256", "-nographic", "-monitor", "none"),
        *("-serial", f"file:{serial}", "-qmp", f"unix:{qmp},server=on,wait=off"),
        *("-drive", f"file={disk},if=virtio,format=qcow2"),
    ]


def _wait_for_marker(qemu: subprocess.Popen[bytes], serial: Path, out: Path) -> str:
    """The serial log once it holds the marker; fails if QEMU exits or time runs out."""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        log = serial.read_text(errors="replace") if serial.exists() else ""
        if guest.MARKER.search(log):
            return log
        if qemu.poll() is not None:
            said = out.read_text(errors="replace")
            pytest.fail(f"QEMU exited {qemu.returncode} before the marker: {said}\n{log}")
        time.sleep(0.05)
    pytest.fail(f"no marker within {BOOT_TIMEOUT} s; serial log:\n{log}")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


async def _qmp(socket: Path, command: str) -> None:
    client = QMPClient("otherix-test")
    await client.connect(str(socket))
    try:
        await client.execute(command)
    finally:
        await client.disconnect()
