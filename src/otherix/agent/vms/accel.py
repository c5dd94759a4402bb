"""Which accelerator this node's VMs get: ``kvm`` when KVM really runs guests, else ``tcg``.

``probe()`` accepts KVM only when every step works, and names the first that failed:

1. ``/dev/kvm`` opens read-write, ``KVM_GET_API_VERSION`` answers 12 and
   ``KVM_CREATE_VM`` gives a VM fd (the device node alone proves nothing);
2. the KVM behind it is hardware virtualisation (the ``kvm_intel`` or ``kvm_amd`` module
   is loaded). Some cloud VMs offer ``/dev/kvm`` through a software KVM such as
   ``kvm_pvm``, which passes step 1 and even runs a boot sector, but runs only guest
   kernels built for it, not ordinary guests;
3. QEMU itself boots a guest with ``-accel kvm``: the 512-byte boot sector below enters
   64-bit long mode and writes a word to its serial port, which must appear within the
   timeout (``boot_probe``).

The agent probes once at start and reports the answer (and the reason, when TCG) with
the node. ``boot_probe`` is also how the tests check the probe guest itself under TCG.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from otherix.agent.vms.command import QEMU_BINARY, Accel

__all__ = ["AccelProbe", "boot_probe", "probe"]

_KVM_GET_API_VERSION = 0xAE00
_KVM_CREATE_VM = 0xAE01
_KVM_API_VERSION = 12
_HARDWARE_MODULES = ("kvm_intel", "kvm_amd")
_MARKER = b"OTHERIX-LONG-MODE-OK"

# Built with `as --32` and `ld -m elf_i386 -Ttext 0 --oformat binary` from: real mode ->
# identity-map the first 2 MiB (PML4 0x1000, PDPT 0x2000, PD 0x3000), CR4.PAE, EFER.LME,
# CR0.PG|PE, far jump to a 64-bit code segment, then `out` each byte of
# "OTHERIX-LONG-MODE-OK\r\n" to port 0x3f8 and `hlt` forever. Padded to 510 bytes + 55 AA.
_BOOT_SECTOR_CODE = bytes.fromhex(
    "fa31c08ed88ec08ed0bc007cbf0010b9001831c0fcf3abc70600100320c70600200330c7060030"
    "83000f0116887c0f20e06683c8200f22e066b8001000000f22d866b9800000c00f32660d000100"
    "000f300f20c0660d010000800f22c0ea627c080066baf803488d3521000000ac84c07403eeebf8"
    "f4ebfd000000000000000000000000009a20000f00787c00004f5448455249582d4c4f4e472d4d"
    "4f44452d4f4b0d0a"
)
BOOT_SECTOR = _BOOT_SECTOR_CODE.ljust(510, b"\0") + b"\x55\xaa"


@dataclass(frozen=True, slots=True)
class AccelProbe:
    accel: Accel
    reason: str | None  # why not KVM (None when KVM)


def _kvm_device(dev: Path) -> str | None:
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open {dev}: {exc.strerror or exc}"
    try:
        version = fcntl.ioctl(fd, _KVM_GET_API_VERSION)
        if version != _KVM_API_VERSION:
            return f"{dev}: KVM API version {version}, not {_KVM_API_VERSION}"
        try:
            vm_fd = fcntl.ioctl(fd, _KVM_CREATE_VM, 0)
        except OSError as exc:
            return f"{dev}: KVM_CREATE_VM failed: {exc.strerror or exc}"
        os.close(vm_fd)
    except OSError as exc:
        return f"{dev}: KVM_GET_API_VERSION failed: {exc.strerror or exc}"
    finally:
        os.close(fd)
    return None


def _hardware_kvm(sys_module: Path) -> str | None:
    if any((sys_module / name).is_dir() for name in _HARDWARE_MODULES):
        return None
    others = sorted(p.name for p in sys_module.glob("kvm_*")) if sys_module.is_dir() else []
    found = f" (loaded: {', '.join(others)})" if others else ""
    return (
        "KVM here is not hardware virtualisation: neither kvm_intel nor kvm_amd is "
        f"loaded{found}, so ordinary guests may not run"
    )


def boot_probe(accel: Accel, qemu: str = QEMU_BINARY, timeout: float = 10.0) -> str | None:
    """Boot the probe guest under ``accel``; None when it reached long mode, else why not."""
    with tempfile.TemporaryDirectory(prefix="otherix-accel-") as tmp:
        disk = Path(tmp) / "probe.img"
        serial = Path(tmp) / "serial.log"
        disk.write_bytes(BOOT_SECTOR)
        argv = [
            qemu, "-accel", accel, "-machine", "pc", "-nodefaults", "-no-user-config",
            "-display", "none", "-m", "16", "-nic", "none",
            "-drive", f"file={disk},format=raw,if=ide",
            "-serial", f"file:{serial}",
        ]  # fmt: skip
        try:
            proc = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            return f"cannot run {qemu}: {exc.strerror or exc}"
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if serial.exists() and _MARKER in serial.read_bytes():
                    return None
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                    return f"QEMU -accel {accel} exited ({proc.returncode}): {err}"
                time.sleep(0.05)
            return f"QEMU -accel {accel} did not boot the probe guest in {timeout:g} s"
        finally:
            proc.kill()
            proc.communicate()


def probe(
    dev: Path = Path("/dev/kvm"),
    sys_module: Path = Path("/sys/module"),
    qemu: str = QEMU_BINARY,
    timeout: float = 10.0,
) -> AccelProbe:
    """``kvm`` when all three checks pass, else ``tcg`` with the first failure."""
    reason = _kvm_device(dev) or _hardware_kvm(sys_module) or boot_probe("kvm", qemu, timeout)
    if reason is None:
        return AccelProbe("kvm", None)
    return AccelProbe("tcg", reason)
