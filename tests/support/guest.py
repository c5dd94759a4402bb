"""The test guest: a real bootable VM disk built from Debian packages only (issue 15 item 6).

``build_guest(cache_dir)`` returns a 28 MiB qcow2 (about 16 MB on disk): an MBR from
syslinux-common, partition 1 a FAT16 file system that syslinux boots with the Debian cloud
kernel (the versioned package ``linux-image-cloud-amd64`` depends on, fetched with
``apt-get download`` and unpacked in Python from ``dpkg-deb --fsys-tarfile``) and a
busybox-static initramfs; partition 2 (``/dev/vda2``) an empty ext4 data file system. The
guest's init loads the virtio and ACPI button modules, mounts the data partition,
increments the number in ``/counter`` (absent: 0), syncs, prints exactly one line
``OTHERIX-GUEST-UP boot=<counter>`` on ttyS0 and powers off (``poweroff -f``, after
unmounting) when the ACPI power button is pressed (QMP ``system_powerdown``): busybox
``acpid`` listens, and is known to hold the input devices before the marker is printed, so
a power-down sent on seeing the marker is never lost. Any failure before the marker prints
``OTHERIX-GUEST-ERROR <what>`` instead, and the guest still powers off on the button.

The image is cached in ``cache_dir`` under a name made of the kernel package's version and
a hash of this file's source (``cache_name``), so a new kernel or a change here builds a new
one, which replaces the stale ones; a second call finds it at once. The unpacked kernel and
modules are cached per kernel version beside it (``kernel-<version>/``). Builds are
serialised by a lock file, so concurrent sessions (xdist workers) build once.

``read_counter(disk)`` reads ``/counter`` off a stopped guest's disk (``qemu-img convert``
to raw, then ``debugfs`` on the partition), for tests that check that the disk they booted
is the disk that changed. ``missing_prerequisites()`` names what a build needs that this
machine lacks. Used by the ``test_guest`` fixture in ``tests/conftest.py``.
"""

from __future__ import annotations

import fcntl
import functools
import gzip
import hashlib
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "MARKER",
    "build_guest",
    "cache_name",
    "kernel_package",
    "missing_prerequisites",
    "read_counter",
]

#: the line the guest prints once its counter is written; group 1 is the counter. Not
#: anchored at a line start: the firmware's terminal reset (ESC c ...) precedes it on ttyS0.
MARKER = re.compile(r"OTHERIX-GUEST-UP boot=(\d+)\r?\n")

KERNEL_META = "linux-image-cloud-amd64"
# in load order; each module's ``modinfo -F depends`` must be listed before it (checked)
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "evdev",
    "button",
)
SYSLINUX = Path("/usr/lib/syslinux")
BUSYBOX = Path("/bin/busybox")

MIB = 1024 * 1024
SECTOR = 512
FAT_START, FAT_SIZE = 1 * MIB, 18 * MIB  # kernel (14 MB), initramfs, ldlinux
DATA_START, DATA_SIZE = FAT_START + FAT_SIZE, 8 * MIB
DISK_SIZE = DATA_START + DATA_SIZE + 1 * MIB

#: tool or file -> the Debian package that provides it
PREREQUISITES = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "modinfo": "kmod",
    "cpio": "cpio",
    str(BUSYBOX): "busybox-static",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "syslinux": "syslinux",
    str(SYSLINUX / "mbr/mbr.bin"): "syslinux-common",
    str(SYSLINUX / "modules/bios/ldlinux.c32"): "syslinux-common",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
}

SYSLINUX_CFG = """\
SERIAL 0 115200
DEFAULT otherix
PROMPT 0
TIMEOUT 0
LABEL otherix
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 quiet
"""

ACPID_CONF = "PWRF power\n"  # busybox acpid: the power button's event runs /etc/acpi/power

POWER = """\
#!/bin/sh
umount /data || mount -o remount,ro /data
sync
poweroff -f
"""

INIT = """\
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
ACPID=
listen() {  # acpid in the background; back once it holds every input event device
  acpid -f -l /dev/null -c /etc/acpi -a /etc/acpid.conf &
  ACPID=$!
  want=$(ls /dev/input | grep -c event)
  i=0
  until [ "$(ls -l /proc/$ACPID/fd | grep -c /dev/input/event)" -ge "$want" ]; do
    i=$((i + 1)); [ $i -gt 200 ] && { echo "OTHERIX-GUEST-ERROR acpid not ready"; return; }
    usleep 50000
  done
}
hold() { wait $ACPID; echo "OTHERIX-GUEST-ERROR acpid exited"; while :; do sleep 3600; done; }
fail() { echo "OTHERIX-GUEST-ERROR $*"; [ -n "$ACPID" ] || listen; hold; }
mkdir -p /proc /sys /dev /data
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in MODULES; do insmod /lib/modules/$m.ko || fail "insmod $m"; done
listen
i=0
while [ ! -b /dev/vda2 ]; do
  i=$((i + 1)); [ $i -gt 200 ] && fail "no /dev/vda2"; usleep 50000
done
mount -t ext4 /dev/vda2 /data || fail "mount /dev/vda2"
n=$(cat /data/counter 2>/dev/null || echo 0)
n=$((n + 1))
echo $n > /data/counter.new && sync && mv /data/counter.new /data/counter && sync \\
  || fail "write counter"
echo "OTHERIX-GUEST-UP boot=$n"
hold
""".replace("MODULES", " ".join(MODULES))


def missing_prerequisites() -> list[str]:
    """What a build needs and this machine lacks, as ``"<tool> (<Debian package>)"``."""
    missing = [
        f"{need} ({package})"
        for need, package in PREREQUISITES.items()
        if not (Path(need).is_file() if need.startswith("/") else shutil.which(need))
    ]
    # a dynamic ELF names its loader (PT_INTERP) in its first page; the static one does not
    if BUSYBOX.is_file() and b"/ld-linux" in BUSYBOX.read_bytes()[:4096]:
        missing.append(f"a static {BUSYBOX} (busybox-static, not busybox)")
    return missing


def cache_name(kernel_version: str, source: bytes) -> str:
    """The cached image's file name: the kernel package's version and this builder's hash."""
    return f"otherix-guest-{kernel_version}-{hashlib.sha256(source).hexdigest()[:16]}.qcow2"


@functools.cache
def kernel_package() -> tuple[str, str]:
    """The versioned kernel package the cloud meta-package depends on, and its version
    (asked once per process: each ``apt-cache`` call takes about half a second)."""
    meta = _run("apt-cache", "show", "--no-all-versions", KERNEL_META)
    depends = re.search(r"^Depends: *(linux-image-[^\s,]+)(?: \(= ([^)\s]+)\))?", meta, re.M)
    if depends is None:
        raise RuntimeError(f"apt-cache show {KERNEL_META}: no linux-image dependency")
    package, pinned = depends.groups()
    if pinned:
        return package, pinned
    shown = _run("apt-cache", "show", "--no-all-versions", package)
    version = re.search(r"^Version: *(\S+)", shown, re.M)
    if version is None:
        raise RuntimeError(f"apt-cache show {package}: no version")
    return package, version.group(1)


def build_guest(cache_dir: Path) -> Path:
    """The guest's qcow2 in ``cache_dir``, built first if it is not there (module docstring).
    Treat it as read-only: boot a copy (or an overlay on it)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    package, version = kernel_package()
    image = cache_dir / cache_name(version, Path(__file__).read_bytes())
    if image.is_file():
        return image
    with _locked(cache_dir / ".lock"):
        if image.is_file():  # another process built it while we waited
            return image
        kernel = _unpacked_kernel(cache_dir, package, version)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            work = Path(tmp)
            raw = _assemble(work, kernel)
            _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, work / "guest.qcow2")
            (work / "guest.qcow2").rename(image)
        for stale in cache_dir.glob("otherix-guest-*.qcow2"):  # older kernels or builders
            if stale != image:
                stale.unlink()
        for stale in cache_dir.glob("kernel-*"):
            if stale != kernel:
                shutil.rmtree(stale)
    return image


def read_counter(disk: Path) -> int | None:
    """The number in ``/counter`` on a stopped guest's data partition; None if absent.
    QEMU's image lock makes this fail while a VM still has ``disk`` open."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "disk.raw"
        _run("qemu-img", "convert", "-O", "raw", disk, raw)
        out = _run("debugfs", "-R", "cat /counter", f"{raw}?offset={DATA_START}")
    text = out.strip()
    return int(text) if text else None


def _run(*argv: str | Path, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    """Run one build step, return its stdout; a failure raises with the step's stderr."""
    return _run_bytes(*argv, cwd=cwd, stdin=stdin).decode(errors="replace")


def _run_bytes(*argv: str | Path, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, input=stdin, capture_output=True, check=False
    )
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"guest build step {argv[0]} failed ({done.returncode}): {stderr}")
    return done.stdout


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _unpacked_kernel(cache_dir: Path, package: str, version: str) -> Path:
    """``vmlinuz`` and the MODULES' ``.ko`` files of the kernel package, in a cached folder."""
    folder = cache_dir / f"kernel-{version}"
    if (folder / "vmlinuz").is_file():
        return folder
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        work = Path(tmp)
        _run("apt-get", "download", "-q", f"{package}={version}", cwd=work)
        (deb,) = work.glob("*.deb")
        out = work / "kernel"
        out.mkdir()
        wanted = {f"{m}.ko" for m in MODULES}
        deb_tar = ["dpkg-deb", "--fsys-tarfile", str(deb)]
        with subprocess.Popen(deb_tar, stdout=subprocess.PIPE) as tar:
            assert tar.stdout is not None
            with tarfile.open(fileobj=tar.stdout, mode="r|") as members:
                for member in members:
                    name = Path(member.name).name
                    if member.isfile() and (name in wanted or name.startswith("vmlinuz-")):
                        source = members.extractfile(member)
                        assert source is not None
                        target = "vmlinuz" if name.startswith("vmlinuz-") else name
                        (out / target).write_bytes(source.read())
        if tar.returncode != 0:
            raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb.name} failed ({tar.returncode})")
        _check_modules(out)
        out.rename(folder)
    return folder


def _check_modules(folder: Path) -> None:
    """Every MODULE was found and each one's dependencies load before it."""
    loaded: set[str] = set()
    for module in MODULES:
        ko = folder / f"{module}.ko"
        if not ko.is_file():
            raise RuntimeError(f"{module}.ko is not in the kernel package")
        depends = _run("modinfo", "-F", "depends", ko).strip()
        late = [d for d in depends.split(",") if d and d not in loaded]
        if late:
            raise RuntimeError(f"{module} needs {late} loaded before it: add them to MODULES")
        loaded.add(module)


def _assemble(work: Path, kernel: Path) -> Path:
    """The raw disk (module docstring), built as files: no loop devices, no mounts."""
    initrd = _initramfs(work, kernel)
    fat, data, raw = work / "fat.img", work / "data.img", work / "disk.raw"
    (work / "syslinux.cfg").write_text(SYSLINUX_CFG)
    for image, size in ((fat, FAT_SIZE), (data, DATA_SIZE), (raw, DISK_SIZE)):
        with image.open("wb") as f:
            f.truncate(size)
    hidden = str(FAT_START // SECTOR)
    _run("mkfs.vfat", "-F", "16", "-n", "OTHERIX", "-h", hidden, fat)
    for item in (kernel / "vmlinuz", initrd, work / "syslinux.cfg"):
        _run("mcopy", "-i", fat, item, f"::{item.name}")
    (work / "empty").mkdir()
    _run("mkfs.ext4", "-q", "-F", "-L", "otherix-data", "-d", work / "empty", data)
    table = (
        "label: dos\nunit: sectors\n"
        f"start={FAT_START // SECTOR}, size={FAT_SIZE // SECTOR}, type=6, bootable\n"
        f"start={DATA_START // SECTOR}, size={DATA_SIZE // SECTOR}, type=83\n"
    )
    _run("sfdisk", "-q", raw, stdin=table.encode())
    with raw.open("r+b") as disk:
        disk.write((SYSLINUX / "mbr/mbr.bin").read_bytes()[:440])
        for image, start in ((fat, FAT_START), (data, DATA_START)):
            disk.seek(start)
            with image.open("rb") as part:
                shutil.copyfileobj(part, disk)
    _run("syslinux", "--offset", str(FAT_START), "--install", raw)
    return raw


def _initramfs(work: Path, kernel: Path) -> Path:
    """A gzipped newc cpio: busybox, the init script, acpid's power action, the modules."""
    root = work / "initramfs"
    for folder in ("bin", "lib/modules", "etc/acpi"):
        (root / folder).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    (root / "bin/sh").symlink_to("busybox")
    for module in MODULES:
        shutil.copy2(kernel / f"{module}.ko", root / "lib/modules")
    (root / "etc/acpid.conf").write_text(ACPID_CONF)
    for path, text in ((root / "init", INIT), (root / "etc/acpi/power", POWER)):
        path.write_text(text)
        path.chmod(0o755)
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    listing = "\n".join(names).encode()
    archive = _run_bytes(
        "cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet", cwd=root, stdin=listing
    )
    initrd = work / "initrd.gz"
    initrd.write_bytes(gzip.compress(archive, mtime=0))
    return initrd
